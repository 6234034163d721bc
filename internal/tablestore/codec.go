package tablestore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"github.com/mxazure/backups/internal/backup"
)

// The entity codec. Every entity type is a flat struct whose exported fields are its properties, by Go
// name, each of one of these types, written deliberately:
//
//   - string: a JSON string (Edm.String).
//   - bool: a JSON boolean (Edm.Boolean).
//   - int32: a bare JSON number; Azure infers Edm.Int32 from a number without a decimal point in range.
//   - int64: the decimal digits as a JSON string with "<name>@odata.type": "Edm.Int64", which is what
//     aztables.EDMInt64 writes. A bare number would be stored as Int32 or, above 2^31, as Double (exact
//     only up to 2^53) or refused; Azurite stores anything unchanged, so only Azure would show it.
//   - time.Time: a string of fixed width that sorts as text in time order (timeLayout); "" is the zero
//     time.
//
// Reading accepts the older forms too: an int64 or int32 written as a bare number, and times written in
// RFC 3339 with a trimmed fraction (time.RFC3339Nano). Unknown properties (odata metadata, Timestamp,
// properties of a newer version) are ignored; missing ones read as zero.

// timeLayout is always UTC with nine fraction digits: every value has the same width, so text order is
// time order (time.RFC3339Nano trims the fraction: "...05Z" sorts after "...05.5Z").
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// Azure's size limits (learn.microsoft.com, "Understanding the Table service data model"): a property
// value of at most 64 KiB (strings count in UTF-16, so 32 K characters of the BMP) and an entity of at
// most 1 MiB, counted as entitySize does. Azurite does not always enforce them.
const (
	maxPropertyBytes = 64 << 10
	maxEntityBytes   = 1 << 20
)

var timeType = reflect.TypeFor[time.Time]()

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// parseTime reads formatTime's form and the older RFC 3339 form with a trimmed fraction; "" is the zero
// time.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s) // also accepts a fraction of any width, and none
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// utf16Len is the number of UTF-16 code units of s: how Azure counts a string's size.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r) // invalid UTF-8 reads as U+FFFD: one unit
	}
	return n
}

// encodeEntity renders v (a pointer to an entity struct) as the JSON body of an insert or update, and
// refuses, before anything is sent, an entity Azure would refuse for its size: a permanent
// CodeInternal error naming the table and the property (the domain bounds what it stores, so reaching a
// limit is a bug, not a retry).
func encodeEntity(table string, v any) ([]byte, error) {
	rv := reflect.Indirect(reflect.ValueOf(v))
	rt := rv.Type()
	var buf bytes.Buffer
	buf.WriteByte('{')
	size := 4 // Azure's formula: 4 bytes, then each key and property
	pk, rk := rv.FieldByName("PartitionKey").String(), rv.FieldByName("RowKey").String()
	for i := 0; i < rt.NumField(); i++ {
		f, fv := rt.Field(i), rv.Field(i)
		if !f.IsExported() {
			continue
		}
		if buf.Len() > 1 {
			buf.WriteByte(',')
		}
		name, _ := json.Marshal(f.Name)
		buf.Write(name)
		buf.WriteByte(':')
		var valueSize int
		switch {
		case f.Type == timeType:
			s := formatTime(fv.Interface().(time.Time))
			b, _ := json.Marshal(s)
			buf.Write(b)
			valueSize = 2*utf16Len(s) + 4
		case f.Type.Kind() == reflect.String:
			s := fv.String()
			b, _ := json.Marshal(s)
			buf.Write(b)
			valueSize = 2*utf16Len(s) + 4
			if f.Name != "PartitionKey" && f.Name != "RowKey" && valueSize-4 > maxPropertyBytes {
				return nil, backup.Errorf(backup.CodeInternal,
					"table storage: %s entity %s/%s: property %s is %d bytes in UTF-16, over the %d bytes Azure accepts",
					table, pk, rk, f.Name, valueSize-4, maxPropertyBytes)
			}
		case f.Type.Kind() == reflect.Bool:
			buf.WriteString(strconv.FormatBool(fv.Bool()))
			valueSize = 1
		case f.Type.Kind() == reflect.Int32:
			buf.WriteString(strconv.FormatInt(fv.Int(), 10))
			valueSize = 4
		case f.Type.Kind() == reflect.Int64:
			annotation, _ := json.Marshal(f.Name + "@odata.type")
			fmt.Fprintf(&buf, `"%d",%s:"Edm.Int64"`, fv.Int(), annotation)
			valueSize = 8
		default:
			return nil, fmt.Errorf("table storage: %s entity: property %s has type %s, which the codec does not write", table, f.Name, f.Type)
		}
		if f.Name == "PartitionKey" || f.Name == "RowKey" {
			size += valueSize - 4 // the keys count their characters only
		} else {
			size += 8 + 2*utf16Len(f.Name) + valueSize
		}
	}
	buf.WriteByte('}')
	if size > maxEntityBytes {
		return nil, backup.Errorf(backup.CodeInternal,
			"table storage: %s entity %s/%s is %d bytes, over the %d bytes Azure accepts for an entity",
			table, pk, rk, size, maxEntityBytes)
	}
	return buf.Bytes(), nil
}

// decodeEntity reads a stored entity (data, as Table Storage returns it) into v, a pointer to an entity
// struct.
func decodeEntity(data []byte, v any) error {
	_, err := decodeEntityETag(data, v)
	return err
}

// decodeEntityETag is decodeEntity that also returns the entity's "odata.etag" (matched without regard
// to case, "" unless a string), read in the same pass.
//
// One pass over the JSON object (scanner, which checks the syntax as encoding/json does) keeps each
// property's value as a substring of one string of the entity; the properties v declares (entityPlan,
// by exact name, the last one when repeated) are then decoded in field order. A list of 1,000 entities
// does this 1,000 times: BenchmarkDecodeEntity.
func decodeEntityETag(data []byte, v any) (string, error) {
	rv := reflect.ValueOf(v).Elem()
	plan := planOf(rv.Type())
	var buf [32]string
	raws := buf[:0]
	if len(plan.fields) > len(buf) {
		raws = make([]string, 0, len(plan.fields))
	}
	raws = raws[:len(plan.fields)] // "" where the property is absent: no JSON value is empty
	var etag string
	sc := scanner{s: string(data)} // one copy: the strings decoded are substrings of it
	err := sc.object(func(key, raw string) {
		if i, ok := plan.index[key]; ok {
			raws[i] = raw
		} else if strings.EqualFold(key, "odata.etag") && raw[0] == '"' {
			etag, _ = jsonString(raw)
		}
	})
	if err != nil {
		return "", err
	}
	for i, f := range plan.fields {
		if raws[i] == "" || raws[i] == "null" {
			continue
		}
		if err := decodeProperty(raws[i], f.typ, rv.Field(f.index)); err != nil {
			return "", fmt.Errorf("property %s: %w", f.name, err)
		}
	}
	return etag, nil
}

// entityPlan is what decoding needs of an entity type, worked out once per type: its exported fields and
// where each is by property name.
type entityPlan struct {
	fields []planField
	index  map[string]int // property name -> position in fields
}

type planField struct {
	name  string
	index int // in the struct
	typ   reflect.Type
}

var plans sync.Map // reflect.Type -> *entityPlan

func planOf(t reflect.Type) *entityPlan {
	if p, ok := plans.Load(t); ok {
		return p.(*entityPlan)
	}
	p := &entityPlan{index: map[string]int{}}
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() {
			p.index[f.Name] = len(p.fields)
			p.fields = append(p.fields, planField{name: f.Name, index: i, typ: f.Type})
		}
	}
	plans.Store(t, p)
	return p
}

// decodeProperty reads raw, one JSON value, into fv of type t. A type the codec does not write is an
// error when the property is there.
func decodeProperty(raw string, t reflect.Type, fv reflect.Value) error {
	switch {
	case t == timeType:
		s, err := jsonString(raw)
		if err != nil {
			return err
		}
		tm, err := parseTime(s)
		if err != nil {
			return err
		}
		*fv.Addr().Interface().(*time.Time) = tm
	case t.Kind() == reflect.String:
		s, err := jsonString(raw)
		if err != nil {
			return err
		}
		fv.SetString(s)
	case t.Kind() == reflect.Bool:
		switch raw {
		case "true", "false":
			fv.SetBool(raw == "true")
		default:
			var b bool
			if err := json.Unmarshal([]byte(raw), &b); err != nil {
				return err
			}
			fv.SetBool(b)
		}
	case t.Kind() == reflect.Int32 || t.Kind() == reflect.Int64:
		n, err := decodeInt(raw, t.Bits())
		if err != nil {
			return err
		}
		fv.SetInt(n)
	default:
		return fmt.Errorf("type %s is not read by the codec", t)
	}
	return nil
}

// jsonString reads raw, one JSON value, as a string. ASCII with at most one-character escapes (what the
// service and Table Storage write, an ETag's \" included) is read here; anything else (\u escapes,
// other bytes, not a string) is left to encoding/json, with its errors and its handling of invalid UTF-8.
func jsonString(raw string) (string, error) {
	if s, ok := plainString(raw); ok {
		return s, nil
	}
	var s string
	err := json.Unmarshal([]byte(raw), &s)
	return s, err
}

func plainString(raw string) (string, bool) {
	n := len(raw)
	if n < 2 || raw[0] != '"' || raw[n-1] != '"' {
		return "", false
	}
	i := 1
	for i < n-1 && plainByte[raw[i]] {
		i++
	}
	if i == n-1 {
		return raw[1 : n-1], true // no escapes: a substring of raw
	}
	b := append(make([]byte, 0, n), raw[1:i]...)
	for ; i < n-1; i++ {
		c := raw[i]
		if c == '\\' && i+1 < n-1 && unescape[raw[i+1]] != 0 {
			c = unescape[raw[i+1]]
			i++
		} else if !plainByte[c] {
			return "", false
		}
		b = append(b, c)
	}
	return string(b), true
}

// plainByte is true for the bytes that stand for themselves in a JSON string: ASCII but controls, '"'
// and '\\'.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// unescape maps the character after a backslash to what it stands for; 0: not a one-character escape.
var unescape = [256]byte{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}

// decodeInt reads an integer written as an Edm.Int64 string ("3000000000") or as a bare number (what
// records written before the annotation hold; a number Azure kept as Double reads back when integral).
func decodeInt(raw string, bits int) (int64, error) {
	s := raw
	if strings.HasPrefix(s, `"`) {
		var err error
		if s, err = jsonString(raw); err != nil {
			return 0, err
		}
	}
	n, err := strconv.ParseInt(s, 10, bits)
	if err == nil {
		return n, nil
	}
	f, ferr := strconv.ParseFloat(s, 64)
	if ferr != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, err
	}
	if n := int64(f); bits == 64 || n == int64(int32(n)) {
		return n, nil
	}
	return 0, err
}
