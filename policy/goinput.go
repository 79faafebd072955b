package policy

import (
	"encoding"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Go inputs (the gateway passes its transaction record, a pointer to a
// struct) are converted straight to AST, pruned to the paths the stage
// reads, together with the decision-cache key, without encoding the record
// to JSON and parsing it back: that round trip was most of the policy's
// cost per message once decisions were cached (BenchmarkEvalGoInput). The
// conversion follows encoding/json for the kinds such a record uses —
// structs with json tags (omitempty, "-"), pointers, slices, arrays, maps
// with string keys (sorted), strings, booleans, integers and floats — and
// gives way to the JSON path for any type with other kinds, embedded
// fields or its own JSON or text marshalling (TestGoInputLikeJSON checks
// both give the same AST). The JSON of such an input is made only when the
// decision log needs it.

// maxMapKeys bounds the keys of one map in a record (the record's maps are
// the rate-limit facts, a handful of dimensions).
const maxMapKeys = 10000

// errGoUnsupported sends a value's type down the JSON path.
var errGoUnsupported = errors.New("type not converted directly")

// goField is one encoded struct field.
type goField struct {
	name      string
	index     int
	omitEmpty bool
}

// goType is what the converter knows of a type: its fields when a struct,
// and whether the direct conversion supports it at all.
type goType struct {
	ok     bool
	fields []goField // structs, in declaration order (encoding/json's)
}

var (
	goTypes   sync.Map   // reflect.Type → *goType, complete descriptions only
	goTypesMu sync.Mutex // serialises describing new types
)

var (
	jsonMarshaler = reflect.TypeFor[json.Marshaler]()
	textMarshaler = reflect.TypeFor[encoding.TextMarshaler]()
)

// goTypeOf describes t; a type is supported when every type reachable from
// it is. Descriptions are made once per type, under a lock, and published
// only when complete.
func goTypeOf(t reflect.Type) *goType {
	if g, ok := goTypes.Load(t); ok {
		return g.(*goType)
	}
	goTypesMu.Lock()
	defer goTypesMu.Unlock()
	building := map[reflect.Type]*goType{}
	g := describeType(t, building)
	for bt, bg := range building {
		goTypes.Store(bt, bg)
	}
	return g
}

// describeType describes t, reusing published descriptions and those in
// building (a recursive type meets itself there, taken as supported as far
// as its own parts go).
func describeType(t reflect.Type, building map[reflect.Type]*goType) *goType {
	if g, ok := goTypes.Load(t); ok {
		return g.(*goType)
	}
	if g, ok := building[t]; ok {
		return g
	}
	g := &goType{ok: true}
	building[t] = g
	g.ok = describe(t, g, building)
	return g
}

func describe(t reflect.Type, g *goType, building map[reflect.Type]*goType) bool {
	if t.Implements(jsonMarshaler) || t.Implements(textMarshaler) ||
		reflect.PointerTo(t).Implements(jsonMarshaler) || reflect.PointerTo(t).Implements(textMarshaler) {
		return false
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	case reflect.Pointer:
		return describeType(t.Elem(), building).ok
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return false // []byte is base64 in JSON
		}
		return describeType(t.Elem(), building).ok
	case reflect.Map:
		return t.Key().Kind() == reflect.String && describeType(t.Elem(), building).ok
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous {
				return false
			}
			if !f.IsExported() {
				continue
			}
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if name == "" {
				name = f.Name
			}
			if hasOpt(opts, "string") || !describeType(f.Type, building).ok {
				return false
			}
			g.fields = append(g.fields, goField{name: name, index: i, omitEmpty: hasOpt(opts, "omitempty")})
		}
		return true
	}
	return false
}

func hasOpt(opts, want string) bool {
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == want {
			return true
		}
	}
	return false
}

// goConverter builds the cache key of one Go input and, when build is
// set, its AST. The key comes first and alone: a decision-cache hit needs
// no AST at all.
type goConverter struct {
	converter
	build bool
	key   []byte
}

// goRecord is a Go input read for evaluation: stage and id, the cache key
// of the part its stage reads, and what convert needs.
type goRecord struct {
	in    evalInput
	key   []byte
	rv    reflect.Value
	paths *inputTree
}

// goInput reads a pointer to a supported struct: stage and id and, when
// the stage has a decision cache (caches[stage]), the key of the value
// pruned to byStage[stage] (else paths; nil: all), appended to key.
// errGoUnsupported means: use the JSON path.
func goInput(input any, paths *inputTree, byStage map[string]*inputTree, caches map[string]*decisionCache, key []byte) (goRecord, error) {
	var r goRecord
	rv := reflect.ValueOf(input)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return r, errGoUnsupported
	}
	rv = rv.Elem()
	g := goTypeOf(rv.Type())
	if !g.ok {
		return r, errGoUnsupported
	}
	for _, f := range g.fields {
		if fv := rv.Field(f.index); fv.Kind() == reflect.String {
			switch f.name {
			case "stage":
				r.in.stage = fv.String()
			case "id":
				r.in.id = fv.String()
			}
		}
	}
	if t, ok := byStage[r.in.stage]; ok {
		paths = t
	}
	r.rv, r.paths = rv, paths
	if caches[r.in.stage] == nil {
		return r, nil // nothing to look up: convert walks the value once
	}
	c := goConverter{key: append(key, 'g')}
	_, err := c.term(rv, paths, 0)
	r.key = c.key
	return r, err
}

// convert builds the record's AST (pruned as for its key).
func (r *goRecord) convert() error {
	c := goConverter{converter: converter{kvs: make([][2]*ast.Term, 0, 32)}, build: true}
	t, err := c.term(r.rv, r.paths, 0)
	if err != nil {
		return err
	}
	r.in.v = t.Value
	return nil
}

// term converts v, keeping what t keeps (nil or all: everything).
func (c *goConverter) term(v reflect.Value, t *inputTree, depth int) (*ast.Term, error) {
	if depth > maxInputDepth {
		return nil, fmt.Errorf("input nested deeper than %d", maxInputDepth)
	}
	if t != nil && t.all {
		t = nil
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			c.key = append(c.key, 'z')
			return ast.InternedNullTerm, nil
		}
		return c.term(v.Elem(), t, depth)
	case reflect.Bool:
		if v.Bool() {
			c.key = append(c.key, 't')
		} else {
			c.key = append(c.key, 'f')
		}
		return ast.InternedTerm(v.Bool()), nil
	case reflect.String:
		s := jsonString(v.String())
		c.key = binary.AppendUvarint(append(c.key, 's'), uint64(len(s)))
		c.key = append(c.key, s...)
		if !c.build {
			return nil, nil
		}
		if t, ok := commonTerms[s]; ok {
			return t, nil
		}
		return c.converter.term(ast.String(s)), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return c.number(func(b []byte) ([]byte, error) { return strconv.AppendInt(b, v.Int(), 10), nil })
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return c.number(func(b []byte) ([]byte, error) { return strconv.AppendUint(b, v.Uint(), 10), nil })
	case reflect.Float32, reflect.Float64:
		return c.number(func(b []byte) ([]byte, error) { return appendJSONFloat(b, v.Float(), v.Type().Bits()) })
	case reflect.Slice, reflect.Array:
		if v.Kind() == reflect.Slice && v.IsNil() {
			c.key = append(c.key, 'z')
			return ast.InternedNullTerm, nil
		}
		var elem *inputTree
		if t != nil {
			if t.any == nil {
				// The policy reads this array only by names it cannot
				// have: keep it whole, as the JSON path does.
				t = nil
			} else {
				elem = t.any
			}
		}
		c.key = append(c.key, '[')
		var terms []*ast.Term
		if c.build {
			terms = make([]*ast.Term, v.Len())
		}
		for i := 0; i < v.Len(); i++ {
			x, err := c.term(v.Index(i), elem, depth+1)
			if err != nil {
				return nil, err
			}
			if c.build {
				terms[i] = x
			}
		}
		c.key = append(c.key, ']')
		if !c.build {
			return nil, nil
		}
		return c.converter.term(ast.NewArray(terms...)), nil
	case reflect.Map:
		if v.IsNil() {
			c.key = append(c.key, 'z')
			return ast.InternedNullTerm, nil
		}
		keys := v.MapKeys()
		if len(keys) > maxMapKeys {
			return nil, fmt.Errorf("input map with more than %d keys", maxMapKeys)
		}
		slices.SortFunc(keys, func(a, b reflect.Value) int { return strings.Compare(a.String(), b.String()) })
		c.key = append(c.key, '{')
		mark := len(c.kvs)
		for _, k := range keys {
			name := k.String()
			sub := t
			if t != nil {
				if sub = t.sub(name); sub == nil {
					continue
				}
			}
			if err := c.field(name, v.MapIndex(k), sub, depth); err != nil {
				return nil, err
			}
		}
		c.key = append(c.key, '}')
		if !c.build {
			return nil, nil
		}
		return c.converter.term(c.object(mark)), nil
	case reflect.Struct:
		g := goTypeOf(v.Type())
		c.key = append(c.key, '{')
		mark := len(c.kvs)
		for _, f := range g.fields {
			sub := t
			if t != nil {
				if sub = t.sub(f.name); sub == nil {
					continue
				}
			}
			fv := v.Field(f.index)
			if f.omitEmpty && isEmpty(fv) {
				continue
			}
			if err := c.field(f.name, fv, sub, depth); err != nil {
				return nil, err
			}
		}
		c.key = append(c.key, '}')
		if !c.build {
			return nil, nil
		}
		return c.converter.term(c.object(mark)), nil
	}
	return nil, errGoUnsupported
}

// field converts one object member and pushes it on the scratch stack.
func (c *goConverter) field(name string, v reflect.Value, t *inputTree, depth int) error {
	if len(c.key) > maxInputBytes {
		return fmt.Errorf("input larger than %d bytes", maxInputBytes)
	}
	name = jsonString(name)
	c.key = binary.AppendUvarint(c.key, uint64(len(name)))
	c.key = append(c.key, name...)
	x, err := c.term(v, t, depth+1)
	if err != nil || !c.build {
		return err
	}
	kt, ok := commonTerms[name]
	if !ok {
		kt = c.converter.term(ast.String(name))
	}
	c.kvs = append(c.kvs, [2]*ast.Term{kt, x})
	return nil
}

// number appends the number's JSON text to the key and, when building,
// keeps it in the arena for the ast.Number (no other copy).
func (c *goConverter) number(format func([]byte) ([]byte, error)) (*ast.Term, error) {
	c.key = append(c.key, 'n')
	start := len(c.key)
	var err error
	if c.key, err = format(c.key); err != nil {
		return nil, err
	}
	text := c.key[start:]
	c.key = append(c.key, ';')
	if !c.build {
		return nil, nil
	}
	if t := ast.InternedIntNumberTermFromString(unsafeString(text)); t != nil {
		return t, nil
	}
	c.reserve(len(text))
	at := len(c.arena)
	c.arena = append(c.arena, text...)
	return c.converter.term(ast.Number(unsafeString(c.arena[at:]))), nil
}

// jsonString is s as it comes back from JSON: encoding/json writes each
// byte that is not part of valid UTF-8 as U+FFFD.
func jsonString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func unsafeString(b []byte) string { return unsafe.String(&b[0], len(b)) }

// isEmpty is encoding/json's omitempty test.
func isEmpty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0
	case reflect.Pointer, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// appendJSONFloat formats f as encoding/json does (ES6 number formatting).
func appendJSONFloat(b []byte, f float64, bits int) ([]byte, error) {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return b, fmt.Errorf("unsupported float value %v", f)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			format = 'e'
		}
	}
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b, nil
}
