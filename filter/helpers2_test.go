package filter

import "io"

// Bridges for the external test package (the export_test.go idiom): the
// benchmarks in bench_test.go live in package filter_test beside the
// gateway harness, and reach these unexported parts only through here.

// NewLineValidatorForTest returns the DATA line validator writing to w.
func NewLineValidatorForTest(w io.Writer, normalize bool, maxLine int) io.WriteCloser {
	return newLineValidator(w, normalize, maxLine)
}

// ParseHeaderForTest runs parseHeader on a complete header section and
// returns the number of fields and the body offset.
func ParseHeaderForTest(head []byte) (fields, bodyOff int, err error) {
	f, off, err := parseHeader(head, true)
	return len(f), off, err
}
