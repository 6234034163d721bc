package tablestore

import "fmt"

// scanner walks one JSON object in a single pass for decodeEntityETag. It accepts exactly what
// encoding/json accepts (RFC 8259 syntax, any bytes in strings but control characters, nesting at most
// 10,000 deep, whitespace around the value and nothing else after it) and copies nothing: each
// property's name and value are handed over as the raw JSON text, substrings of s.
type scanner struct {
	s string
	i int
}

const maxNesting = 10000 // encoding/json's limit

// object calls fn with each property of the object that is the whole of s: its name, unquoted, and its
// value as raw JSON. A JSON null in place of the object has no properties, as for json.Unmarshal into a
// map.
func (sc *scanner) object(fn func(name, raw string)) error {
	sc.space()
	if sc.literal("null") {
		sc.space()
		return sc.end()
	}
	if !sc.take('{') {
		return sc.fail("an object")
	}
	sc.space()
	if !sc.take('}') {
		for {
			start := sc.i
			if err := sc.str(); err != nil {
				return err
			}
			name, err := jsonString(sc.s[start:sc.i])
			if err != nil {
				return err
			}
			sc.space()
			if !sc.take(':') {
				return sc.fail("':'")
			}
			sc.space()
			start = sc.i
			if err := sc.value(2); err != nil {
				return err
			}
			fn(name, sc.s[start:sc.i])
			sc.space()
			if sc.take('}') {
				break
			}
			if !sc.take(',') {
				return sc.fail("',' or '}'")
			}
			sc.space()
		}
	}
	sc.space()
	return sc.end()
}

// value skips one JSON value at nesting depth depth.
func (sc *scanner) value(depth int) error {
	if sc.i >= len(sc.s) {
		return sc.fail("a value")
	}
	switch c := sc.s[sc.i]; {
	case c == '"':
		return sc.str()
	case c == '-' || c >= '0' && c <= '9':
		return sc.number()
	case c == '{' || c == '[':
		if depth > maxNesting {
			return fmt.Errorf("JSON nested more than %d deep", maxNesting)
		}
		return sc.container(depth)
	case sc.literal("true") || sc.literal("false") || sc.literal("null"):
		return nil
	}
	return sc.fail("a value")
}

// container skips an object or an array.
func (sc *scanner) container(depth int) error {
	closing := byte(']')
	if sc.s[sc.i] == '{' {
		closing = '}'
	}
	sc.i++
	sc.space()
	if sc.take(closing) {
		return nil
	}
	for {
		if closing == '}' {
			if err := sc.str(); err != nil {
				return err
			}
			sc.space()
			if !sc.take(':') {
				return sc.fail("':'")
			}
			sc.space()
		}
		if err := sc.value(depth + 1); err != nil {
			return err
		}
		sc.space()
		if sc.take(closing) {
			return nil
		}
		if !sc.take(',') {
			return sc.fail(fmt.Sprintf("',' or '%c'", closing))
		}
		sc.space()
	}
}

// str skips a string; escapes must be valid, control characters escaped.
func (sc *scanner) str() error {
	if !sc.take('"') {
		return sc.fail("a string")
	}
	for sc.i < len(sc.s) {
		switch c := sc.s[sc.i]; {
		case c == '"':
			sc.i++
			return nil
		case c == '\\':
			sc.i++
			if sc.i < len(sc.s) && sc.s[sc.i] == 'u' {
				for range 4 {
					if sc.i++; sc.i >= len(sc.s) || !isHex(sc.s[sc.i]) {
						return sc.fail("four hexadecimal digits")
					}
				}
			} else if sc.i >= len(sc.s) || !isEscape(sc.s[sc.i]) {
				return sc.fail("an escape")
			}
			sc.i++
		case c < 0x20:
			return sc.fail(`'"'`)
		default:
			sc.i++
		}
	}
	return sc.fail(`'"'`)
}

// number skips a number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (sc *scanner) number() error {
	sc.take('-')
	if !sc.take('0') && !sc.digits() {
		return sc.fail("a digit")
	}
	if sc.take('.') && !sc.digits() {
		return sc.fail("a digit")
	}
	if sc.take('e') || sc.take('E') {
		if !sc.take('+') {
			sc.take('-')
		}
		if !sc.digits() {
			return sc.fail("a digit")
		}
	}
	return nil
}

// digits skips one or more digits.
func (sc *scanner) digits() bool {
	start := sc.i
	for sc.i < len(sc.s) && sc.s[sc.i] >= '0' && sc.s[sc.i] <= '9' {
		sc.i++
	}
	return sc.i > start
}

func (sc *scanner) space() {
	for sc.i < len(sc.s) {
		switch sc.s[sc.i] {
		case ' ', '\t', '\n', '\r':
			sc.i++
		default:
			return
		}
	}
}

// take skips c if it is next.
func (sc *scanner) take(c byte) bool {
	if sc.i < len(sc.s) && sc.s[sc.i] == c {
		sc.i++
		return true
	}
	return false
}

// literal skips lit if it is next.
func (sc *scanner) literal(lit string) bool {
	if len(sc.s)-sc.i >= len(lit) && sc.s[sc.i:sc.i+len(lit)] == lit {
		sc.i += len(lit)
		return true
	}
	return false
}

func (sc *scanner) end() error {
	if sc.i < len(sc.s) {
		return sc.fail("the end")
	}
	return nil
}

func (sc *scanner) fail(want string) error {
	if sc.i >= len(sc.s) {
		return fmt.Errorf("unexpected end of JSON input, want %s", want)
	}
	return fmt.Errorf("invalid character %q at byte %d of JSON, want %s", sc.s[sc.i], sc.i, want)
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func isEscape(c byte) bool {
	switch c {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return true
	}
	return false
}
