package tablestore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
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
	var props map[string]json.RawMessage
	if err := json.Unmarshal(data, &props); err != nil {
		return err
	}
	rv := reflect.ValueOf(v).Elem()
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f, fv := rt.Field(i), rv.Field(i)
		raw, ok := props[f.Name]
		if !f.IsExported() || !ok || string(raw) == "null" {
			continue
		}
		if err := decodeProperty(raw, f.Type, fv); err != nil {
			return fmt.Errorf("property %s: %w", f.Name, err)
		}
	}
	return nil
}

func decodeProperty(raw json.RawMessage, t reflect.Type, fv reflect.Value) error {
	switch {
	case t == timeType:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		tm, err := parseTime(s)
		if err != nil {
			return err
		}
		fv.Set(reflect.ValueOf(tm))
	case t.Kind() == reflect.String:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return err
		}
		fv.SetString(s)
	case t.Kind() == reflect.Bool:
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return err
		}
		fv.SetBool(b)
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

// decodeInt reads an integer written as an Edm.Int64 string ("3000000000") or as a bare number (what
// records written before the annotation hold; a number Azure kept as Double reads back when integral).
func decodeInt(raw json.RawMessage, bits int) (int64, error) {
	s := string(raw)
	if strings.HasPrefix(s, `"`) {
		if err := json.Unmarshal(raw, &s); err != nil {
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
