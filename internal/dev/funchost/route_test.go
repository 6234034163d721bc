package funchost

import (
	"testing"
)

func TestHTTPFrontMatch(t *testing.T) {
	app := &App{Host: HostConfig{RoutePrefix: "api", ForwardHTTP: true}}
	add := func(name, route string, methods ...string) {
		b := Binding{Type: "httpTrigger", Name: "req", Methods: methods}
		if route != "" {
			b.Route = &route
		}
		app.Functions = append(app.Functions, &Function{Name: name, Trigger: TriggerHTTP, TriggerBinding: b,
			Bindings: []Binding{b, {Type: "http", Name: "res"}}})
	}
	add("Hello", "")
	add("Item", "items/{id:int}/{name?}", "get")
	add("ItemPost", "items/{id}", "post")
	add("ItemNew", "items/new")
	add("ItemAny", "items/{slug}")
	add("Files", "files/{*path}")
	add("Env", "environments/{env:guid}/snapshots")
	add("Alpha", "letters/{s:alpha}")
	add("Defaulted", "pages/{n=1}")
	front, err := newHTTPFront(app, nil, noLog())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path, want string
	}{
		{"GET", "/api/Hello", "Hello"},
		{"GET", "/API/hello/", "Hello"},
		{"GET", "/Hello", ""},
		{"GET", "/api/items/5", "Item"},
		{"GET", "/api/items/5/widget", "Item"},
		{"POST", "/api/items/5", "ItemPost"},
		{"GET", "/api/items/new", "ItemNew"},
		{"GET", "/api/items/abc", "ItemAny"},
		{"DELETE", "/api/items/5/widget", ""},
		{"GET", "/api/items/5/widget/extra", ""},
		{"GET", "/api/files", "Files"},
		{"GET", "/api/files/a/b/c.txt", "Files"},
		{"GET", "/api/environments/0f7d2c1e-8a3b-4c5d-9e6f-112233445566/snapshots", "Env"},
		{"GET", "/api/environments/not-a-guid/snapshots", ""},
		{"GET", "/api/letters/abc", "Alpha"},
		{"GET", "/api/letters/ab1", ""},
		{"GET", "/api/pages", "Defaulted"},
		{"GET", "/api/pages/3", "Defaulted"},
		{"GET", "/api/nothing", ""},
		{"GET", "/", ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			got := ""
			if r := front.match(tc.method, tc.path); r != nil {
				got = r.fn.Name
			}
			if got != tc.want {
				t.Fatalf("match: got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseRouteRejects(t *testing.T) {
	for _, route := range []string{"files/{*path}/more", "a/{}/b", "a/b{c}", "a/{x?}/b", "a/{x"} {
		t.Run(route, func(t *testing.T) {
			if _, err := parseRoute(route); err == nil {
				t.Fatalf("parseRoute(%q): got nil error, want one", route)
			}
		})
	}
}

func TestHTTPFrontEmptyPrefix(t *testing.T) {
	route := "status"
	b := Binding{Type: "httpTrigger", Route: &route}
	app := &App{Host: HostConfig{RoutePrefix: ""}, Functions: []*Function{{Name: "S", Trigger: TriggerHTTP, TriggerBinding: b}}}
	front, err := newHTTPFront(app, nil, noLog())
	if err != nil {
		t.Fatal(err)
	}
	if front.match("GET", "/status") == nil {
		t.Fatalf("match /status with empty prefix: got nil, want S")
	}
	if front.match("GET", "/api/status") != nil {
		t.Fatalf("match /api/status with empty prefix: got a function, want none")
	}
}
