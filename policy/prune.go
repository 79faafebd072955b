package policy

import (
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/valyala/fastjson"
)

// inputTree is the part of the input the compiled policy can read. Eval
// converts only that part of the JSON into OPA terms: turning the whole
// record into AST costs more than evaluating the shipped rules
// (BenchmarkInputConversion), and most of the record (header list, URLs,
// DKIM details, …) is read by no rule. The decision log still gets the
// whole input (Decision.Input).
type inputTree struct {
	all  bool // keep everything below
	kids map[string]*inputTree
	// any applies to every key or index at this level: a reference that
	// iterates (input.ratelimit[k].allowed) keeps only allowed under every
	// key, not the whole object. finish merges it into kids.
	any *inputTree
}

func (t *inputTree) anyChild() *inputTree {
	if t.any == nil {
		t.any = &inputTree{}
	}
	return t.any
}

// union adds everything o keeps to t.
func (t *inputTree) union(o *inputTree) {
	if o == nil || t.all {
		return
	}
	if o.all {
		*t = inputTree{all: true}
		return
	}
	for k, c := range o.kids {
		t.child(k).union(c)
	}
	if o.any != nil {
		t.anyChild().union(o.any)
	}
}

// finish makes every explicit child also keep what any keeps (a key
// read by name is also reached by iteration), bottom up.
func (t *inputTree) finish() {
	if t == nil || t.all {
		return
	}
	if t.any != nil {
		t.any.finish()
		for _, c := range t.kids {
			c.union(t.any)
		}
	}
	for _, c := range t.kids {
		c.finish()
	}
}

// sub returns the subtree that applies to key k, or nil when k is not kept.
func (t *inputTree) sub(k string) *inputTree {
	if c, ok := t.kids[k]; ok {
		return c
	}
	return t.any
}

func (t *inputTree) child(k string) *inputTree {
	if t.kids == nil {
		t.kids = map[string]*inputTree{}
	}
	c := t.kids[k]
	if c == nil {
		c = &inputTree{}
		t.kids[k] = c
	}
	return c
}

// inputPaths collects every reference to input in the compiled modules and
// queries. A reference is kept to its end, and everything below that;
// a non-string part (a variable, e.g. iteration, or an index) stands for
// every key or index at its level. A bare `input` (or any use the walker
// cannot place) keeps the whole input: nil is returned.
func inputPaths(c *ast.Compiler, queries ...ast.Body) *inputTree {
	nodes := make([]any, 0, len(c.Modules)+len(queries))
	for _, m := range c.Modules {
		nodes = append(nodes, m)
	}
	for _, q := range queries {
		nodes = append(nodes, q)
	}
	return inputPathsOf(nodes...)
}

// reachablePaths is inputPaths for the rules query can reach in c: the
// input one stage's partially evaluated query reads, where rules folded
// away by partial evaluation (or guarded by another stage) no longer count.
// A data reference is followed to every rule at, above or below its ground
// prefix, which over-approximates dynamic references.
func reachablePaths(c *ast.Compiler, query ast.Body) *inputTree {
	return inputPathsOf(reachable(c, query)...)
}

// reachable returns query and every rule of c it can reach.
func reachable(c *ast.Compiler, query ast.Body) []any {
	seen := map[*ast.Rule]bool{}
	nodes := []any{query}
	var queue []*ast.Rule
	add := func(ref ast.Ref) {
		for _, rule := range c.GetRules(ref) {
			if !seen[rule] {
				seen[rule] = true
				queue = append(queue, rule)
			}
		}
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch v := x.(type) {
		case ast.Var:
			if v.Equal(ast.DefaultRootDocument.Value) {
				add(ast.DefaultRootRef) // bare data: every rule
			}
		case ast.Ref:
			if v[0].Equal(ast.DefaultRootDocument) {
				add(v.GroundPrefix())
			} else {
				vis.Walk(v[0])
			}
			// Not the head (data itself), but refs nested in the parts.
			for _, t := range v[1:] {
				vis.Walk(t)
			}
			return true
		}
		return false
	})
	vis.Walk(query)
	for len(queue) > 0 {
		r := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		nodes = append(nodes, r)
		vis.Walk(r)
	}
	return nodes
}

func inputPathsOf(nodes ...any) *inputTree {
	root := &inputTree{}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch v := x.(type) {
		case ast.Var:
			if v.Equal(ast.InputRootDocument.Value) {
				root.all = true
			}
		case ast.Ref:
			if len(v) > 0 && v[0].Value.Compare(ast.InputRootDocument.Value) == 0 {
				node := root
				if len(v) == 1 {
					root.all = true
				}
				for i := 1; i < len(v) && !node.all; i++ {
					if s, ok := v[i].Value.(ast.String); ok {
						node = node.child(string(s))
					} else {
						node = node.anyChild()
					}
					if i == len(v)-1 {
						node.all = true
					}
				}
			}
			// Refs can nest (input.a[input.b]); visit the parts.
			for _, t := range v[1:] {
				vis.Walk(t)
			}
			return true
		}
		return false
	})
	for _, n := range nodes {
		vis.Walk(n)
	}
	if root.all {
		return nil
	}
	root.finish()
	return root
}

// pruned converts the parts of v that t keeps.
func (c *converter) pruned(v *fastjson.Value, t *inputTree) (ast.Value, error) {
	if t == nil || t.all {
		return c.value(v, 1)
	}
	if v.Type() == fastjson.TypeArray && t.any != nil {
		arr, _ := v.Array()
		terms := make([]*ast.Term, len(arr))
		for i, x := range arr {
			val, err := c.pruned(x, t.any)
			if err != nil {
				return nil, err
			}
			terms[i] = c.term(val)
		}
		return ast.NewArray(terms...), nil
	}
	o, err := v.Object()
	if err != nil {
		// Not an object where the policy expects one: keep it whole, the
		// policy's refs into it are simply undefined.
		return c.value(v, 1)
	}
	mark := len(c.kvs)
	var ferr error
	o.Visit(func(k []byte, x *fastjson.Value) {
		if ferr != nil {
			return
		}
		sub := t.sub(string(k))
		if sub == nil {
			return
		}
		val, err := c.pruned(x, sub)
		if err != nil {
			ferr = err
			return
		}
		c.kvs = append(c.kvs, [2]*ast.Term{c.key(k), c.term(val)})
	})
	if ferr != nil {
		return nil, ferr
	}
	return c.object(mark), nil
}
