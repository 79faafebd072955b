package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/valyala/fastjson"
)

// maxInputBytes bounds the encoded input (a transaction record is a few kB;
// header lists and attachment lists are bounded by the MIME walker).
const maxInputBytes = 4 << 20

var parserPool fastjson.ParserPool

// evalInput is an input ready for evaluation.
type evalInput struct {
	v     ast.Value
	raw   []byte // the JSON, for the decision log; nil for an ast.Value input
	stage string
	id    string
}

// toValue converts the input to an ast.Value (see toInput), whole.
func toValue(input any) (ast.Value, []byte, error) {
	in, err := toInput(input, nil)
	return in.v, in.raw, err
}

// toInput converts the input the way Eval's JSON path does (tools, tests
// and benchmarks use it): structs are JSON-encoded once and parsed with
// fastjson straight into AST terms, skipping the map[string]any step of
// ast.InterfaceToValue, and only the parts the policy reads (paths; nil:
// all) are converted (see BenchmarkInputConversion).
func toInput(input any, paths *inputTree) (evalInput, error) {
	in, pi, err := parseInput(input)
	defer pi.release()
	if err != nil || pi.fv == nil {
		return in, err
	}
	in.v, err = pi.convert(paths)
	return in, err
}

// parsedInput is an input parsed but not yet converted to AST.
type parsedInput struct {
	fv *fastjson.Value // nil for an ast.Value input (or on error)
	p  *fastjson.Parser
}

// release returns the parser; fv is invalid after.
func (pi *parsedInput) release() {
	if pi.p != nil {
		parserPool.Put(pi.p)
		pi.p, pi.fv = nil, nil
	}
}

// convert turns the parts of the input that paths keeps into AST.
func (pi *parsedInput) convert(paths *inputTree) (ast.Value, error) {
	c := converter{kvs: make([][2]*ast.Term, 0, 32)}
	if paths != nil {
		return c.pruned(pi.fv, paths)
	}
	return c.value(pi.fv, 0)
}

// parseInput encodes the input to JSON once (the bytes are kept for the
// decision log) and parses it with fastjson, reading stage and id. An
// ast.Value input is taken as it is (in.v set, pi.fv nil).
func parseInput(input any) (evalInput, parsedInput, error) {
	var in evalInput
	var pi parsedInput
	var b []byte
	switch v := input.(type) {
	case nil:
		return in, pi, errors.New("no input")
	case ast.Value:
		obj, ok := v.(ast.Object)
		if !ok {
			return in, pi, errors.New("input is not an object")
		}
		in.v = v
		in.stage, in.id = stageAndID(obj)
		return in, pi, nil
	case json.RawMessage:
		b = v
	case []byte:
		b = v
	default:
		var err error
		b, err = json.Marshal(input)
		if err != nil {
			return in, pi, err
		}
	}
	in.raw = b
	if len(b) > maxInputBytes {
		return in, pi, fmt.Errorf("input larger than %d bytes", maxInputBytes)
	}
	pi.p = parserPool.Get()
	fv, err := pi.p.ParseBytes(b)
	if err != nil {
		return in, pi, err
	}
	if fv.Type() != fastjson.TypeObject {
		return in, pi, errors.New("input is not a JSON object")
	}
	pi.fv = fv
	in.stage = string(fv.GetStringBytes("stage"))
	in.id = string(fv.GetStringBytes("id"))
	return in, pi, nil
}

const maxInputDepth = 32

// converter turns one parsed input into AST with few allocations: terms
// come from slabs, string bytes from one arena, and the key/value pairs of
// every object from one scratch stack (ast.NewObject copies them). The
// input is small (a few kB) and lives for one evaluation; evaluation never
// mutates input terms.
type converter struct {
	terms []ast.Term
	kvs   [][2]*ast.Term
	// arena holds the bytes of the input's strings, in chunks. Bytes once
	// appended to a chunk are never written again (a full chunk is
	// replaced, not grown in place), which is what makes the unsafe.String
	// views of it immutable strings.
	arena []byte
}

// termSlab is the number of terms allocated at once.
const termSlab = 32

// arenaChunk is the size of one string arena chunk: the strings the shipped
// rules read from a typical record fit in one or two.
const arenaChunk = 512

// reserve makes room for n more bytes in the current arena chunk.
func (c *converter) reserve(n int) {
	if len(c.arena)+n > cap(c.arena) {
		c.arena = make([]byte, 0, max(arenaChunk, n))
	}
}

func (c *converter) term(v ast.Value) *ast.Term {
	if len(c.terms) == cap(c.terms) {
		c.terms = make([]ast.Term, 0, termSlab)
	}
	c.terms = append(c.terms, ast.Term{Value: v})
	return &c.terms[len(c.terms)-1]
}

func (c *converter) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	c.reserve(len(b))
	start := len(c.arena)
	c.arena = append(c.arena, b...)
	return unsafe.String(&c.arena[start], len(b))
}

// key returns the term of an object key, shared for the schema's names.
func (c *converter) key(k []byte) *ast.Term {
	if t, ok := commonTerms[string(k)]; ok {
		return t
	}
	return c.term(ast.String(c.str(k)))
}

// object builds an object from the pairs pushed on the scratch stack
// since mark.
func (c *converter) object(mark int) ast.Object {
	o := ast.NewObject(c.kvs[mark:]...)
	clear(c.kvs[mark:])
	c.kvs = c.kvs[:mark]
	return o
}

func (c *converter) value(v *fastjson.Value, depth int) (ast.Value, error) {
	t, err := c.termOf(v, depth)
	if err != nil {
		return nil, err
	}
	return t.Value, nil
}

// termOf converts v, sharing the immutable terms of common scalars.
func (c *converter) termOf(v *fastjson.Value, depth int) (*ast.Term, error) {
	switch v.Type() {
	case fastjson.TypeArray, fastjson.TypeObject:
		if depth > maxInputDepth {
			return nil, fmt.Errorf("input nested deeper than %d", maxInputDepth)
		}
	}
	switch v.Type() {
	case fastjson.TypeNull:
		return ast.InternedNullTerm, nil
	case fastjson.TypeTrue:
		return ast.InternedTerm(true), nil
	case fastjson.TypeFalse:
		return ast.InternedTerm(false), nil
	case fastjson.TypeString:
		sb, _ := v.StringBytes()
		if t, ok := commonTerms[string(sb)]; ok {
			return t, nil
		}
		return c.term(ast.String(c.str(sb))), nil
	case fastjson.TypeNumber:
		// Keep the literal: it is exactly what encoding/json wrote.
		// MarshalTo of a number appends its text to the arena. A literal
		// longer than the reserve grows the chunk by copying, which leaves
		// the bytes of earlier strings untouched.
		c.reserve(32)
		start := len(c.arena)
		c.arena = v.MarshalTo(c.arena)
		if len(c.arena) == start {
			return nil, errors.New("empty JSON number")
		}
		nb := unsafe.String(&c.arena[start], len(c.arena)-start)
		if t := ast.InternedIntNumberTermFromString(nb); t != nil {
			return t, nil
		}
		return c.term(ast.Number(nb)), nil
	case fastjson.TypeArray:
		arr, _ := v.Array()
		terms := make([]*ast.Term, len(arr))
		for i, x := range arr {
			t, err := c.termOf(x, depth+1)
			if err != nil {
				return nil, err
			}
			terms[i] = t
		}
		return c.term(ast.NewArray(terms...)), nil
	case fastjson.TypeObject:
		o, _ := v.Object()
		mark := len(c.kvs)
		var ferr error
		o.Visit(func(k []byte, x *fastjson.Value) {
			if ferr != nil {
				return
			}
			t, err := c.termOf(x, depth+1)
			if err != nil {
				ferr = err
				return
			}
			c.kvs = append(c.kvs, [2]*ast.Term{c.key(k), t})
		})
		if ferr != nil {
			return nil, ferr
		}
		return c.term(c.object(mark)), nil
	}
	return nil, fmt.Errorf("unexpected JSON type %s", v.Type())
}

// commonTerms holds shared terms for the input's keys (every property name
// in the schema) and frequent values, so converting an input allocates
// only for what is specific to the message. Terms are never mutated by
// evaluation (OPA interns terms the same way).
var commonTerms = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	var walk func(any)
	walk = func(x any) {
		switch v := x.(type) {
		case map[string]any:
			if props, ok := v["properties"].(map[string]any); ok {
				for k := range props {
					m[k] = ast.StringTerm(k)
				}
			}
			if enum, ok := v["enum"].([]any); ok {
				for _, e := range enum {
					if s, ok := e.(string); ok {
						m[s] = ast.StringTerm(s)
					}
				}
			}
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	var schema any
	if err := json.Unmarshal(InputSchema, &schema); err == nil {
		walk(schema)
	}
	for _, s := range []string{"client_ip", "client_net", "helo", "mail_from", "mail_from_domain", "rcpt", "rcpt_domain", "dkim_domain",
		"mailfrom", "TLS 1.2", "TLS 1.3", "7BIT", "8BITMIME", "rsa-sha256", "ed25519-sha256",
		"application/pdf", "application/octet-stream", "application/zip", "text/plain", "text/html", "image/png", "image/jpeg"} {
		m[s] = ast.StringTerm(s)
	}
	return m
}()

func toInt(x any) (int, bool) {
	switch n := x.(type) {
	case json.Number:
		i, err := n.Int64()
		if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
			return 0, false
		}
		return int(i), true
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > math.MaxInt32 {
			return 0, false
		}
		return int(n), true
	case int:
		return n, true
	case int64:
		return int(n), true
	}
	return 0, false
}

// readFileBounded reads a JSON input file for tools and tests.
func readFileBounded(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxInputBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInputBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, maxInputBytes)
	}
	return b, nil
}
