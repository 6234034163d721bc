package funchost

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadBothLayouts(t *testing.T) {
	for _, flat := range []bool{false, true} {
		name := "functions folder"
		if flat {
			name = "flat deployed layout"
		}
		t.Run(name, func(t *testing.T) {
			t.Setenv("FUNCHOST_TEST_QUEUE", "from-env")
			root := writeApp(t, appSpec{
				flat: flat,
				hostJSON: `{"version":"2.0","functionTimeout":"01:02:03","unknownField":1,
 "customHandler":{"description":{"defaultExecutablePath":"handler","arguments":["-v"],"workingDirectory":"wd"},
   "enableForwardingHttpRequest":true},
 "extensions":{"http":{"routePrefix":"/v1/"},"serviceBus":{"maxConcurrentCalls":4,"maxConcurrentSessions":2,
   "maxAutoLockRenewalDuration":"1.00:00:00"}}}`,
				functions: map[string]string{
					"Api":     httpFn("items/{id}", "get", "post"),
					"Nightly": timerFn("%NIGHTLY%", map[string]any{"runOnStartup": true, "useMonitor": false}),
					"Jobs":    queueFn("%JOBS_QUEUE%", true),
					"EnvQ":    queueFn("%FUNCHOST_TEST_QUEUE%", false),
					"Events":  subscriptionFn("backup-events", "audit"),
					"Blobby":  `{"bindings":[{"type":"blobTrigger","direction":"in","name":"b","path":"x/{name}"}]}`,
					"Off":     `{"disabled":true,"bindings":[{"type":"httpTrigger","direction":"in","name":"req"}]}`,
				},
				settings: map[string]string{"NIGHTLY": "0 0 1 * * *", "JOBS_QUEUE": "backup-jobs"},
			})
			app, err := Load(root)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			hc := app.Host
			if got, want := hc.FunctionTimeout, time.Hour+2*time.Minute+3*time.Second; got != want {
				t.Errorf("FunctionTimeout: got %s, want %s", got, want)
			}
			if hc.ExecutablePath != "handler" || strings.Join(hc.Arguments, " ") != "-v" || hc.WorkingDirectory != "wd" || !hc.ForwardHTTP {
				t.Errorf("customHandler: got %+v", hc)
			}
			if hc.RoutePrefix != "v1" || hc.MaxConcurrentCalls != 4 || hc.MaxConcurrentSessions != 2 || hc.MaxAutoLockRenewalDuration != 24*time.Hour {
				t.Errorf("extensions: got prefix %q calls %d sessions %d renew %s", hc.RoutePrefix, hc.MaxConcurrentCalls,
					hc.MaxConcurrentSessions, hc.MaxAutoLockRenewalDuration)
			}
			var names []string
			for _, f := range app.Functions {
				names = append(names, f.Name)
			}
			if got, want := strings.Join(names, ","), "Api,Blobby,EnvQ,Events,Jobs,Nightly"; got != want {
				t.Fatalf("functions: got %s, want %s", got, want)
			}
			checks := []struct {
				fn         string
				trigger    TriggerKind
				entityWant string
			}{
				{"Api", TriggerHTTP, ""},
				{"Blobby", TriggerUnsupported, ""},
				{"EnvQ", TriggerServiceBus, "from-env"},
				{"Events", TriggerServiceBus, "backup-events/subscriptions/audit"},
				{"Jobs", TriggerServiceBus, "backup-jobs"},
				{"Nightly", TriggerTimer, ""},
			}
			for _, c := range checks {
				f := app.Function(strings.ToLower(c.fn))
				if f == nil {
					t.Fatalf("Function(%s): got nil", c.fn)
				}
				if f.Trigger != c.trigger {
					t.Errorf("%s trigger: got %s, want %s", c.fn, f.Trigger, c.trigger)
				}
				if c.entityWant != "" && f.Entity() != c.entityWant {
					t.Errorf("%s entity: got %s, want %s", c.fn, f.Entity(), c.entityWant)
				}
			}
			if f := app.Function("Api"); f.Route() != "items/{id}" || !f.IsHTTPForwardable() || len(f.TriggerBinding.Methods) != 2 {
				t.Errorf("Api: got route %q forwardable %v methods %v", f.Route(), f.IsHTTPForwardable(), f.TriggerBinding.Methods)
			}
			n := app.Function("Nightly")
			if n.Schedule.String() != "0 0 1 * * *" || !n.TriggerBinding.RunOnStartup || n.TriggerBinding.UseMonitor == nil || *n.TriggerBinding.UseMonitor {
				t.Errorf("Nightly: got schedule %q binding %+v", n.Schedule, n.TriggerBinding)
			}
			if !app.Function("Jobs").TriggerBinding.IsSessionsEnabled {
				t.Errorf("Jobs: got sessions disabled, want enabled")
			}
			if app.Settings["JOBS_QUEUE"] != "backup-jobs" {
				t.Errorf("Settings: got %v", app.Settings)
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	root := writeApp(t, appSpec{functions: map[string]string{"Hello": httpFn("")}})
	app, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	hc := app.Host
	if hc.RoutePrefix != "api" || hc.FunctionTimeout != DefaultFunctionTimeout || hc.MaxConcurrentCalls != 16 ||
		hc.MaxConcurrentSessions != 8 || hc.MaxAutoLockRenewalDuration != 5*time.Minute {
		t.Errorf("defaults: got %+v", hc)
	}
	if app.Settings != nil {
		t.Errorf("Settings without local.settings.json: got %v, want nil", app.Settings)
	}
	if got := app.Function("Hello").Route(); got != "Hello" {
		t.Errorf("route without route: got %q, want the function name", got)
	}
	if filepath.Base(app.Root) != filepath.Base(root) || !filepath.IsAbs(app.Root) {
		t.Errorf("Root: got %s, want absolute %s", app.Root, root)
	}
}

func TestLoadRoutePrefixAndTimeoutForms(t *testing.T) {
	tests := []struct {
		name, host  string
		wantPrefix  string
		wantTimeout time.Duration
	}{
		{"empty prefix, unbounded string", `"functionTimeout":"-1","extensions":{"http":{"routePrefix":""}}`, "", 0},
		{"unbounded number", `"functionTimeout":-1`, "api", 0},
		{"seconds fraction", `"functionTimeout":"00:00:01.5"`, "api", 1500 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := writeApp(t, appSpec{hostJSON: `{"customHandler":{"description":{"defaultExecutablePath":"handler"}},` + tc.host + `}`})
			app, err := Load(root)
			if err != nil {
				t.Fatal(err)
			}
			if app.Host.RoutePrefix != tc.wantPrefix || app.Host.FunctionTimeout != tc.wantTimeout {
				t.Errorf("got prefix %q timeout %s, want %q %s", app.Host.RoutePrefix, app.Host.FunctionTimeout, tc.wantPrefix, tc.wantTimeout)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		spec    appSpec
		wantErr []string
	}{
		{"malformed host.json", appSpec{hostJSON: `{"version":`}, []string{"host.json"}},
		{"no executable", appSpec{hostJSON: `{"customHandler":{}}`}, []string{"host.json", "defaultExecutablePath"}},
		{"bad timeout", appSpec{hostJSON: `{"functionTimeout":"ten minutes","customHandler":{"description":{"defaultExecutablePath":"h"}}}`},
			[]string{"functionTimeout", "ten minutes"}},
		{"malformed function.json", appSpec{functions: map[string]string{"Broken": `{"bindings":[`}},
			[]string{filepath.Join("Broken", "function.json")}},
		{"no trigger", appSpec{functions: map[string]string{"Lonely": `{"bindings":[{"type":"http","direction":"out","name":"res"}]}`}},
			[]string{"Lonely", "want exactly one trigger"}},
		{"undefined setting", appSpec{functions: map[string]string{"Nightly": timerFn("%NOPE_NOT_SET%", nil)}},
			[]string{"Nightly", "NOPE_NOT_SET", "not defined"}},
		{"bad schedule", appSpec{functions: map[string]string{"Nightly": timerFn("0 0 25 * * *", nil)}},
			[]string{"Nightly", "hour field"}},
		{"queue without name", appSpec{functions: map[string]string{"Q": queueFn("", false)}},
			[]string{"queueName or topicName"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := writeApp(t, tc.spec)
			_, err := Load(root)
			if err == nil {
				t.Fatalf("Load: got nil error, want one mentioning %v", tc.wantErr)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load: got error %q, want it to mention %q", err, w)
				}
			}
		})
	}
	t.Run("malformed local.settings.json names the file", func(t *testing.T) {
		root := writeApp(t, appSpec{})
		writeFile(t, filepath.Join(root, "local.settings.json"), `{"Values":`)
		_, err := Load(root)
		if err == nil || !strings.Contains(err.Error(), "local.settings.json") {
			t.Fatalf("Load: got %v, want an error naming local.settings.json", err)
		}
	})
}

func TestParseTimeSpan(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"00:05:00", 5 * time.Minute, false},
		{"01:00:00", time.Hour, false},
		{"2.03:04:05", 2*24*time.Hour + 3*time.Hour + 4*time.Minute + 5*time.Second, false},
		{"00:00:00.250", 250 * time.Millisecond, false},
		{"5m", 0, true},
		{"00:60:00", 0, true},
		{"24:00:00", 0, true},
		{"00:00:00", 0, true},
		{"x.00:01:00", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTimeSpan(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseTimeSpan(%q): got error %v, want error %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("ParseTimeSpan(%q): got %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

func TestResolveSettingsOrder(t *testing.T) {
	t.Setenv("FUNCHOST_ORDER", "env")
	root := writeApp(t, appSpec{
		functions: map[string]string{"Q": queueFn("%FUNCHOST_ORDER%-%ONLY_VALUES%", false)},
		settings:  map[string]string{"FUNCHOST_ORDER": "values", "ONLY_VALUES": "v"},
	})
	app, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := app.Function("Q").Entity(); got != "values-v" {
		t.Errorf("Load: got queue %q, want local.settings Values before the environment (values-v)", got)
	}
	app, err = load(root, map[string]string{"FUNCHOST_ORDER": "extra"})
	if err != nil {
		t.Fatal(err)
	}
	if got := app.Function("Q").Entity(); got != "extra-v" {
		t.Errorf("load with extra env: got queue %q, want extra-v", got)
	}
}
