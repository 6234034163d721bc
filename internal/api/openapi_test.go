package api

import (
	"encoding/json"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/mxazure/backups/internal/backup"
)

type openAPIDoc struct {
	OpenAPI    string                                `json:"openapi"`
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Parameters map[string]struct {
			Name     string `json:"name"`
			In       string `json:"in"`
			Required bool   `json:"required"`
		} `json:"parameters"`
		Schemas map[string]schemaDoc `json:"schemas"`
	} `json:"components"`
}

type schemaDoc struct {
	Ref        string                     `json:"$ref"`
	Required   []string                   `json:"required"`
	Properties map[string]json.RawMessage `json:"properties"`
}

type operationDoc struct {
	Parameters  []refDoc                  `json:"parameters"`
	RequestBody json.RawMessage           `json:"requestBody"`
	Security    *[]any                    `json:"security"`
	Responses   map[string]responseDocRaw `json:"responses"`
}

type refDoc struct {
	Ref string `json:"$ref"`
}

type responseDocRaw struct {
	Ref     string `json:"$ref"`
	Content map[string]struct {
		Schema schemaDoc `json:"schema"`
	} `json:"content"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(openAPIDocument, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	return doc
}

// operation returns the documented operation of method on path (a route pattern).
func (d openAPIDoc) operation(t *testing.T, method, pattern string) (operationDoc, bool) {
	t.Helper()
	raw, ok := d.Paths[pattern][strings.ToLower(method)]
	if !ok {
		return operationDoc{}, false
	}
	var op operationDoc
	if err := json.Unmarshal(raw, &op); err != nil {
		t.Fatalf("%s %s: %v", method, pattern, err)
	}
	return op, true
}

// pathParams returns the names of the parameters declared for every operation of a path.
func (d openAPIDoc) pathParams(t *testing.T, pattern string) []string {
	t.Helper()
	var refs []refDoc
	if raw, ok := d.Paths[pattern]["parameters"]; ok {
		if err := json.Unmarshal(raw, &refs); err != nil {
			t.Fatal(err)
		}
	}
	return d.paramNames(t, refs, "path")
}

func (d openAPIDoc) paramNames(t *testing.T, refs []refDoc, in string) []string {
	t.Helper()
	var out []string
	for _, r := range refs {
		p, ok := d.Components.Parameters[strings.TrimPrefix(r.Ref, "#/components/parameters/")]
		if !ok {
			t.Errorf("parameter %s is not in components", r.Ref)
			continue
		}
		if p.In == in {
			out = append(out, p.Name)
		}
	}
	sort.Strings(out)
	return out
}

// schema resolves a $ref to a component schema.
func (d openAPIDoc) schema(s schemaDoc) schemaDoc {
	if s.Ref != "" {
		return d.Components.Schemas[strings.TrimPrefix(s.Ref, "#/components/schemas/")]
	}
	return s
}

// TestOpenAPIMatchesRoutes keeps the OpenAPI document true to the route table: the same paths and
// methods (and 405's Allow lists exactly those), path parameters declared as in the pattern, every
// operation lists the error codes it can answer.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadOpenAPI(t)
	f := newFixture(t)
	served := map[string][]string{}
	for _, rt := range f.srv.routes() {
		served[rt.pattern] = append(served[rt.pattern], rt.method)
	}
	for pattern, ops := range doc.Paths {
		var methods []string
		for m := range ops {
			if m != "parameters" {
				methods = append(methods, strings.ToUpper(m))
			}
		}
		sort.Strings(methods)
		got := slices.Sorted(slices.Values(served[pattern]))
		if !slices.Equal(methods, got) {
			t.Errorf("%s: documented methods %v, served %v", pattern, methods, got)
		}
	}
	for pattern := range served {
		if _, ok := doc.Paths[pattern]; !ok {
			t.Errorf("route %s is served but not in openapi.json", pattern)
		}
	}
	param := regexp.MustCompile(`\{(\w+)\}`)
	for pattern, methods := range served {
		var want []string
		for _, m := range param.FindAllStringSubmatch(pattern, -1) {
			want = append(want, m[1])
		}
		sort.Strings(want)
		if got := doc.pathParams(t, pattern); !slices.Equal(got, want) {
			t.Errorf("%s: path parameters %v, want %v", pattern, got, want)
		}
		// A method the path does not document is answered 405 with the documented ones in Allow.
		resp, _ := f.do(t, manager, "OPTIONS", concretePath(pattern), "")
		allow := strings.Split(resp.Header.Get("Allow"), ", ")
		if resp.StatusCode != 405 || !slices.Equal(slices.Sorted(slices.Values(allow)), slices.Sorted(slices.Values(methods))) {
			t.Errorf("OPTIONS %s: %d Allow %v, want 405 %v", pattern, resp.StatusCode, allow, methods)
		}
		for _, m := range methods {
			op, _ := doc.operation(t, m, pattern)
			public := op.Security != nil && len(*op.Security) == 0
			var need []string
			if !public {
				need = append(need, "400", "401", "403", "500", "503")
			}
			if strings.Contains(pattern, "{env}") {
				need = append(need, "404")
			}
			if len(op.RequestBody) > 0 {
				need = append(need, "413", "415")
			}
			for _, code := range need {
				if _, ok := op.Responses[code]; !ok {
					t.Errorf("%s %s: response %s not documented", m, pattern, code)
				}
			}
			if _, ok := op.Responses["401"]; ok && public {
				t.Errorf("%s %s: public, yet documents 401", m, pattern)
			}
		}
	}
	resp, _ := f.do(t, "", "GET", "/api/v1/openapi.json", "")
	if resp.StatusCode != 200 {
		t.Errorf("GET openapi.json: %d", resp.StatusCode)
	}
}

// concretePath fills a route pattern's parameters with the fixture's ids.
func concretePath(pattern string) string {
	return strings.NewReplacer("{ns}", nsA, "{env}", envA, "{id}", snapA, "{restore_id}", restA,
		"{archive_id}", archA, "{upload_id}", uplA).Replace(pattern)
}

// TestOpenAPIQueryParameters: a GET documents offset and limit exactly when it pages (a bad limit is
// refused), and no operation has another query parameter.
func TestOpenAPIQueryParameters(t *testing.T) {
	doc := loadOpenAPI(t)
	f := newFixture(t)
	for _, rt := range f.srv.routes() {
		op, _ := doc.operation(t, rt.method, rt.pattern)
		got := doc.paramNames(t, op.Parameters, "query")
		if rt.method != "GET" {
			if len(got) > 0 {
				t.Errorf("%s %s: query parameters %v", rt.method, rt.pattern, got)
			}
			continue
		}
		resp, _ := f.do(t, manager, rt.method, concretePath(rt.pattern)+"?limit=0", "")
		pages := resp.StatusCode == 400
		if pages && !slices.Equal(got, []string{"limit", "offset"}) || !pages && len(got) > 0 {
			t.Errorf("%s %s: query parameters %v, but ?limit=0 answers %d", rt.method, rt.pattern, got, resp.StatusCode)
		}
	}
}

// TestOpenAPIResponsesMatchBodies: each endpoint's success status is documented, and the body it sends
// has exactly the properties of the documented schema, all of them required.
func TestOpenAPIResponsesMatchBodies(t *testing.T) {
	doc := loadOpenAPI(t)
	f, restoreFixture := newFixture(t), newFixture(t)
	type call struct{ method, path, pattern, body string }
	env := "/api/v1/namespaces/{ns}/environments/{env}"
	calls := []call{
		{"GET", "/api/health", "/api/health", ""},
		{"GET", "/api/v1/namespaces/ns-a/environments", "/api/v1/namespaces/{ns}/environments", ""},
		{"GET", "/api/v1/namespaces/ns-a/settings", "/api/v1/namespaces/{ns}/settings", ""},
		{"PUT", "/api/v1/namespaces/ns-a/settings", "/api/v1/namespaces/{ns}/settings", `{"backups_enabled":true}`},
		{"GET", concretePath(env + "/activity"), env + "/activity", ""},
		{"GET", concretePath(env + "/snapshots"), env + "/snapshots", ""},
		{"GET", concretePath(env + "/snapshots/{id}"), env + "/snapshots/{id}", ""},
		{"PATCH", concretePath(env + "/snapshots/{id}"), env + "/snapshots/{id}", `{"comment":"x"}`},
		{"POST", concretePath(env + "/snapshots"), env + "/snapshots", `{}`},
		{"POST", concretePath(env + "/snapshots"), env + "/snapshots", `{}`}, // 409: busy
		{"DELETE", concretePath(env + "/snapshots/{id}"), env + "/snapshots/{id}", ""},
		{"GET", concretePath(env + "/snapshots/{id}"), env + "/snapshots/{id}", ""}, // 404: deleted
	}
	// Restores, in a fixture of their own (the snapshot POST above holds the lock).
	restoreCalls := []call{
		{"GET", concretePath(env + "/restores"), env + "/restores", ""},
		{"GET", concretePath(env + "/restores/{restore_id}"), env + "/restores/{restore_id}", ""},
		{"POST", concretePath(env + "/restores/{restore_id}/undo"), env + "/restores/{restore_id}/undo", ""},
		{"POST", concretePath(env + "/restores/{restore_id}/undo"), env + "/restores/{restore_id}/undo", ""},                             // 409: undoing
		{"POST", concretePath(env + "/restores"), env + "/restores", `{"source_snapshot_id":"` + snapA + `"}`},                           // 409: busy
		{"POST", concretePath(env + "/restores"), env + "/restores", `{"source_snapshot_id":"` + snapA + `","source_namespace":"ns-b"}`}, // 400
		{"GET", concretePath(env + "/restores/11111111-2222-3333-4444-555555555555"), env + "/restores/{restore_id}", ""},                // 404
	}
	fresh := newFixture(t)
	freshCalls := []call{
		{"POST", concretePath(env + "/snapshots/{id}/archives"), env + "/snapshots/{id}/archives", `{}`},
		{"POST", concretePath(env + "/snapshots/{id}/archives"), env + "/snapshots/{id}/archives", `{"data_type":"files_only"}`}, // 400
		{"GET", concretePath(env + "/snapshots/{id}/archives"), env + "/snapshots/{id}/archives", ""},
		{"GET", concretePath(env + "/snapshots/{id}/archives/{archive_id}"), env + "/snapshots/{id}/archives/{archive_id}", ""},
		{"POST", concretePath(env + "/uploads"), env + "/uploads", `{}`},
		{"POST", concretePath(env + "/uploads/{upload_id}/complete"), env + "/uploads/{upload_id}/complete", `{}`},
		{"POST", concretePath(env + "/uploads/{upload_id}/complete"), env + "/uploads/{upload_id}/complete", `{}`}, // the same snapshot again
		{"POST", concretePath(env + "/restores"), env + "/restores", `{"source_snapshot_id":"` + snapA + `"}`},
		{"DELETE", concretePath(env + "/snapshots/{id}"), env + "/snapshots/{id}", ""}, // 409: in use
	}
	for i, c := range slices.Concat(calls, restoreCalls, freshCalls) {
		f := f
		if i >= len(calls)+len(restoreCalls) {
			f = fresh
		} else if i >= len(calls) {
			f = restoreFixture
		}
		op, ok := doc.operation(t, c.method, c.pattern)
		if !ok {
			t.Errorf("%s %s not documented", c.method, c.pattern)
			continue
		}
		resp, body := f.do(t, manager, c.method, c.path, c.body)
		code := strconv.Itoa(resp.StatusCode)
		r, ok := op.Responses[code]
		if !ok {
			t.Errorf("%s %s answered %s, which is not documented", c.method, c.pattern, code)
			continue
		}
		if r.Ref == "#/components/responses/Problem" {
			r = responseDocRaw{Content: map[string]struct {
				Schema schemaDoc `json:"schema"`
			}{"application/problem+json": {Schema: schemaDoc{Ref: "#/components/schemas/Problem"}}}}
		}
		if body == nil {
			if len(r.Content) > 0 {
				t.Errorf("%s %s %s: no body, but content is documented", c.method, c.pattern, code)
			}
			continue
		}
		var s schemaDoc
		for _, ct := range r.Content {
			s = doc.schema(ct.Schema)
		}
		wantKeys := slices.Sorted(maps.Keys(s.Properties))
		gotKeys := slices.Sorted(maps.Keys(body))
		if !slices.Equal(gotKeys, wantKeys) {
			t.Errorf("%s %s %s: body has %v, schema %v", c.method, c.pattern, code, gotKeys, wantKeys)
		}
		if !slices.Equal(slices.Sorted(slices.Values(s.Required)), wantKeys) {
			t.Errorf("%s %s %s: required %v, want every property %v", c.method, c.pattern, code, s.Required, wantKeys)
		}
	}
}

// TestOpenAPISchemasMatchTypes: each component schema has exactly the JSON fields of the Go type the
// API encodes, all required (fields are always present), nullable exactly where the Go field is a
// pointer; the code enum is every domain code.
func TestOpenAPISchemasMatchTypes(t *testing.T) {
	doc := loadOpenAPI(t)
	types := map[string]reflect.Type{
		"Problem":             reflect.TypeFor[Problem](),
		"Health":              reflect.TypeFor[healthReport](),
		"Environment":         reflect.TypeFor[environmentJSON](),
		"Settings":            reflect.TypeFor[settingsJSON](),
		"ActivityEntry":       reflect.TypeFor[activityJSON](),
		"Snapshot":            reflect.TypeFor[snapshotJSON](),
		"Restore":             reflect.TypeFor[restoreJSON](),
		"Archive":             reflect.TypeFor[archiveJSON](),
		"Upload":              reflect.TypeFor[uploadJSON](),
		"Progress":            reflect.TypeFor[backup.Progress](),
		"NextAutomaticBackup": reflect.TypeFor[nextBackupJSON](),
	}
	for name := range doc.Components.Schemas {
		if _, ok := types[name]; !ok {
			t.Errorf("schema %s has no Go type in this test", name)
		}
	}
	for name, typ := range types {
		s, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("schema %s missing", name)
			continue
		}
		var fields []string
		for i := range typ.NumField() {
			fd := typ.Field(i)
			tag, _, _ := strings.Cut(fd.Tag.Get("json"), ",")
			if tag == "-" || tag == "" {
				continue
			}
			fields = append(fields, tag)
			prop, ok := s.Properties[tag]
			if !ok {
				continue
			}
			nullable := strings.Contains(string(prop), `"null"`)
			if pointer := fd.Type.Kind() == reflect.Pointer; pointer != nullable {
				t.Errorf("%s.%s: nullable %v in the schema, Go pointer %v", name, tag, nullable, pointer)
			}
		}
		sort.Strings(fields)
		props := slices.Sorted(maps.Keys(s.Properties))
		if !slices.Equal(props, fields) {
			t.Errorf("schema %s: properties %v, Go fields %v", name, props, fields)
		}
		if !slices.Equal(slices.Sorted(slices.Values(s.Required)), fields) {
			t.Errorf("schema %s: required %v, want all of %v", name, s.Required, fields)
		}
	}
	var code struct {
		Enum []string `json:"enum"`
	}
	if err := json.Unmarshal(doc.Components.Schemas["Problem"].Properties["code"], &code); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range backup.Codes() {
		want = append(want, string(c))
	}
	if !slices.Equal(slices.Sorted(slices.Values(code.Enum)), slices.Sorted(slices.Values(want))) {
		t.Errorf("Problem.code enum %v, want %v", code.Enum, want)
	}
}
