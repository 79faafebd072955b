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
// queries. A reference is kept up to its first non-constant part (a
// variable, e.g. iteration): everything below is kept. A bare `input` (or
// any use the walker cannot place) keeps the whole input: nil is returned.
func inputPaths(c *ast.Compiler, queries ...ast.Body) *inputTree {
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
					s, ok := v[i].Value.(ast.String)
					if !ok {
						node.all = true
						break
					}
					node = node.child(string(s))
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
	for _, m := range c.Modules {
		vis.Walk(m)
	}
	for _, q := range queries {
		vis.Walk(q)
	}
	if root.all {
		return nil
	}
	return root
}

// fastToPrunedAST converts the parts of v that t keeps.
func fastToPrunedAST(v *fastjson.Value, t *inputTree) (ast.Value, error) {
	if t == nil || t.all {
		return fastToAST(v, 1)
	}
	o, err := v.Object()
	if err != nil {
		// Not an object where the policy expects one: keep it whole, the
		// policy's refs into it are simply undefined.
		return fastToAST(v, 1)
	}
	kvs := make([][2]*ast.Term, 0, len(t.kids))
	var ferr error
	o.Visit(func(k []byte, x *fastjson.Value) {
		if ferr != nil {
			return
		}
		sub, ok := t.kids[string(k)]
		if !ok {
			return
		}
		val, err := fastToPrunedAST(x, sub)
		if err != nil {
			ferr = err
			return
		}
		kt, ok := commonTerms[string(k)]
		if !ok {
			kt = ast.StringTerm(string(k))
		}
		kvs = append(kvs, [2]*ast.Term{kt, ast.NewTerm(val)})
	})
	if ferr != nil {
		return nil, ferr
	}
	return ast.NewObject(kvs...), nil
}
