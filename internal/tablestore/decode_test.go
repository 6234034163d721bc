package tablestore

import (
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The decoder must read exactly what the first codec read: referenceDecode below is that codec's
// decodeEntity (json.Unmarshal into a map of raw values, then each property), and referenceETag how
// pages read an ETag. TestDecodeMatchesReference checks chosen cases; FuzzDecodeEntity any input.

func referenceDecode(data []byte, v any) error {
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
		if err := referenceProperty(raw, f.Type, fv); err != nil {
			return fmt.Errorf("property %s: %w", f.Name, err)
		}
	}
	return nil
}

func referenceProperty(raw json.RawMessage, t reflect.Type, fv reflect.Value) error {
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
		s := string(raw)
		if strings.HasPrefix(s, `"`) {
			if err := json.Unmarshal(raw, &s); err != nil {
				return err
			}
		}
		n, err := strconv.ParseInt(s, 10, t.Bits())
		if err != nil {
			f, ferr := strconv.ParseFloat(s, 64)
			if ferr != nil || f != math.Trunc(f) || f < math.MinInt64 || f >= math.MaxInt64 {
				return err
			}
			if n = int64(f); t.Bits() != 64 && n != int64(int32(n)) {
				return err
			}
		}
		fv.SetInt(n)
	default:
		return fmt.Errorf("type %s is not read by the codec", t)
	}
	return nil
}

func referenceETag(data []byte) string {
	var meta struct {
		ETag string `json:"odata.etag"`
	}
	_ = json.Unmarshal(data, &meta)
	return meta.ETag
}

// everyKind has a field of each type the codec reads, one it refuses and one it must not see.
type everyKind struct {
	PartitionKey, RowKey string
	S                    string
	B                    bool
	I32                  int32
	I64                  int64
	T                    time.Time
	N                    int
	hidden               string
}

func checkDecode(t *testing.T, in string) {
	t.Helper()
	var got, want everyKind
	etag, err := decodeEntityETag([]byte(in), &got)
	werr := referenceDecode([]byte(in), &want)
	if got.hidden != "" {
		t.Errorf("%q: the unexported field was set to %q", in, got.hidden)
	}
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: error %v, the reference's %v", in, err, werr)
	}
	if err != nil {
		if strings.HasPrefix(werr.Error(), "property ") && !strings.HasPrefix(err.Error(), strings.SplitN(werr.Error(), ":", 2)[0]+":") {
			t.Errorf("%q: error %v, the reference's %v", in, err, werr)
		}
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q:\n got %+v\nwant %+v", in, got, want)
	}
	if w := referenceETag([]byte(in)); etag != w {
		t.Errorf("%q: ETag %q, want %q", in, etag, w)
	}
}

var decodeCases = []string{
	storedSnapshot,
	`{"PartitionKey":"p","RowKey":"r","S":"a\"b\\c\/d\n\u00e9\ud834\udd1e","B":true,"I32":"-5","I64":9007199254740993,"T":"2026-11-01T02:03:04.5Z"}`,
	`{"I64":"3000000000","I64@odata.type":"Edm.Int64","I32":3000000000,"T":""}`,
	`{"I64":3000000000.0,"I32":2147483647,"B":false}`, `{"I32":1e3,"I64":-0,"I64":12}`, `{"I64":1.5}`, `{"I64":"1.0"}`,
	`{"S":3}`, `{"S":null,"B":null,"T":null,"N":null}`, `{"N":1}`, `{"hidden":"x","s":"case","S":"exact"}`, `{"B":"true"}`,
	`{"T":"yesterday"}`, `{"S":"x","S":5}`, `{"S":5,"S":"x"}`, `{"I64":5,"S":"x","N":1,"T":"bad"}`,
	` { "S" : "x" , "X" : { "a" : [ 1 , { } , [ ] , "b" , true , null ] } } `, `{"X":[1,2,]}`, `{"X":{"a"}}`,
	`null`, ` null `, `nul`, `nullx`, ``, ` `, `{}`, `[]`, `"x"`, `5`, `{"S":"x"} x`, `{"S":"x"`, `{"S":"x",}`, `{"S"}`, `{S:1}`,
	`{"S":"a` + "\x01" + `"}`, `{"S":"a` + "\xff" + `"}`, "{\"S\":\"\u2028\"}", `{"S":"\x"}`, `{"S":"\u12"}`, `{"S":"\u12G4"}`,
	`{"S":01}`, `{"S":-}`, `{"S":1.}`, `{"S":1e}`, `{"S":.5}`, `{"S":+1}`, `{"S":tru}`, `{"S":truex}`, `{"\u0053":"escaped name"}`,
	`{"odata.etag":"W/\"1\"","ODATA.ETAG":"W/\"2\""}`, `{"odata.etag":5}`, `{"odata.etag":"a","odata.etag":{}}`, `{"Odata.Etag":"\u0041"}`,
	`{"X":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`, `{"X":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
}

func TestDecodeMatchesReference(t *testing.T) {
	for _, in := range decodeCases {
		checkDecode(t, in)
	}
}

func FuzzDecodeEntity(f *testing.F) {
	for _, in := range decodeCases {
		f.Add(in)
	}
	f.Fuzz(checkDecode)
}
