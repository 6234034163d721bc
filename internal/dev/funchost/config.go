package funchost

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mxazure/backups/internal/ncrontab"
)

// Defaults of the real Functions host and its Service Bus extension.
const (
	DefaultRoutePrefix                = "api"
	DefaultFunctionTimeout            = 30 * time.Minute
	DefaultMaxConcurrentCalls         = 16
	DefaultMaxConcurrentSessions      = 8
	DefaultMaxAutoLockRenewalDuration = 5 * time.Minute
)

// TriggerKind says how a function is invoked.
type TriggerKind string

// Trigger kinds the local host knows.
const (
	TriggerHTTP        TriggerKind = "http"
	TriggerTimer       TriggerKind = "timer"
	TriggerServiceBus  TriggerKind = "serviceBus"
	TriggerUnsupported TriggerKind = "unsupported" // a trigger type the local host cannot run
)

// App is an app root as the host reads it: host.json, the function folders and local.settings.json.
type App struct {
	Root      string
	Host      HostConfig
	Functions []*Function // sorted by name
	// Settings are the Values of local.settings.json (nil when the file is absent).
	Settings map[string]string
}

// HostConfig holds the parts of host.json the local host honours.
type HostConfig struct {
	ExecutablePath   string
	Arguments        []string
	WorkingDirectory string
	// ForwardHTTP is customHandler.enableForwardingHttpRequest.
	ForwardHTTP bool
	// FunctionTimeout is 0 when unbounded ("-1").
	FunctionTimeout            time.Duration
	RoutePrefix                string
	MaxConcurrentCalls         int
	MaxConcurrentSessions      int
	MaxAutoLockRenewalDuration time.Duration
}

// Function is one function.json with its %SETTING% names resolved.
type Function struct {
	Name     string
	Dir      string
	Trigger  TriggerKind
	Bindings []Binding
	// TriggerBinding is the trigger's binding (also present in Bindings).
	TriggerBinding Binding
	// Schedule is the parsed NCRONTAB of a timer trigger.
	Schedule *ncrontab.Schedule
}

// Binding is one entry of function.json's bindings; fields not used by its type stay empty.
type Binding struct {
	Type              string   `json:"type"`
	Direction         string   `json:"direction"`
	Name              string   `json:"name"`
	Route             *string  `json:"route"`
	Methods           []string `json:"methods"`
	AuthLevel         string   `json:"authLevel"`
	Schedule          string   `json:"schedule"`
	RunOnStartup      bool     `json:"runOnStartup"`
	UseMonitor        *bool    `json:"useMonitor"`
	QueueName         string   `json:"queueName"`
	TopicName         string   `json:"topicName"`
	SubscriptionName  string   `json:"subscriptionName"`
	IsSessionsEnabled bool     `json:"isSessionsEnabled"`
	Connection        string   `json:"connection"`
	Cardinality       string   `json:"cardinality"`
}

// IsHTTPForwardable reports whether the function has exactly one httpTrigger and one http output, the
// only shape the real host forwards as the original request.
func (f *Function) IsHTTPForwardable() bool {
	if f.Trigger != TriggerHTTP || len(f.Bindings) != 2 {
		return false
	}
	var in, out int
	for _, b := range f.Bindings {
		switch {
		case strings.EqualFold(b.Type, "httpTrigger"):
			in++
		case strings.EqualFold(b.Type, "http"):
			out++
		}
	}
	return in == 1 && out == 1
}

// Route returns the HTTP route template of an HTTP function: its route, or its name when absent.
func (f *Function) Route() string {
	if r := f.TriggerBinding.Route; r != nil && *r != "" {
		return *r
	}
	return f.Name
}

// Entity returns the Service Bus entity a Service Bus function consumes: the queue name, or
// "<topic>/subscriptions/<subscription>".
func (f *Function) Entity() string {
	b := f.TriggerBinding
	if b.QueueName != "" {
		return b.QueueName
	}
	return b.TopicName + "/subscriptions/" + b.SubscriptionName
}

// Load reads the app at appRoot, resolving %SETTING% names against local.settings.json Values, then the
// process environment.
func Load(appRoot string) (*App, error) {
	return load(appRoot, nil)
}

// load reads the app; extra, when not nil, is consulted before the Values when resolving settings.
func load(appRoot string, extra map[string]string) (*App, error) {
	root, err := filepath.Abs(appRoot)
	if err != nil {
		return nil, fmt.Errorf("app root %s: %w", appRoot, err)
	}
	app := &App{Root: root}
	if app.Settings, err = readSettings(filepath.Join(root, "local.settings.json")); err != nil {
		return nil, err
	}
	if app.Host, err = readHostJSON(filepath.Join(root, "host.json")); err != nil {
		return nil, err
	}
	lookup := func(name string) (string, bool) {
		if v, ok := extra[name]; ok {
			return v, true
		}
		if v, ok := app.Settings[name]; ok {
			return v, true
		}
		return os.LookupEnv(name)
	}
	if app.Functions, err = readFunctions(root, lookup); err != nil {
		return nil, err
	}
	return app, nil
}

// Function returns the function with the given name (case-insensitive), or nil.
func (a *App) Function(name string) *Function {
	for _, f := range a.Functions {
		if strings.EqualFold(f.Name, name) {
			return f
		}
	}
	return nil
}

func readSettings(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var doc struct {
		Values map[string]any `json:"Values"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	values := make(map[string]string, len(doc.Values))
	for k, v := range doc.Values {
		switch v := v.(type) {
		case string:
			values[k] = v
		case nil:
			values[k] = ""
		default: // func start accepts numbers and booleans as their JSON text
			b, _ := json.Marshal(v)
			values[k] = string(b)
		}
	}
	return values, nil
}

type hostJSON struct {
	FunctionTimeout json.RawMessage `json:"functionTimeout"`
	CustomHandler   struct {
		Description struct {
			DefaultExecutablePath string   `json:"defaultExecutablePath"`
			Arguments             []string `json:"arguments"`
			WorkingDirectory      string   `json:"workingDirectory"`
		} `json:"description"`
		EnableForwardingHTTPRequest bool `json:"enableForwardingHttpRequest"`
	} `json:"customHandler"`
	Extensions struct {
		HTTP struct {
			RoutePrefix *string `json:"routePrefix"`
		} `json:"http"`
		ServiceBus struct {
			MaxConcurrentCalls         int    `json:"maxConcurrentCalls"`
			MaxConcurrentSessions      int    `json:"maxConcurrentSessions"`
			MaxAutoLockRenewalDuration string `json:"maxAutoLockRenewalDuration"`
			// Extension 4.x layout.
			MessageHandlerOptions struct {
				MaxConcurrentCalls   int    `json:"maxConcurrentCalls"`
				MaxAutoRenewDuration string `json:"maxAutoRenewDuration"`
			} `json:"messageHandlerOptions"`
			SessionHandlerOptions struct {
				MaxConcurrentSessions int `json:"maxConcurrentSessions"`
			} `json:"sessionHandlerOptions"`
		} `json:"serviceBus"`
	} `json:"extensions"`
}

func readHostJSON(path string) (HostConfig, error) {
	var hc HostConfig
	data, err := os.ReadFile(path)
	if err != nil {
		return hc, fmt.Errorf("read %s: %w", path, err)
	}
	var doc hostJSON
	if err := json.Unmarshal(data, &doc); err != nil {
		return hc, fmt.Errorf("parse %s: %w", path, err)
	}
	d := doc.CustomHandler.Description
	if d.DefaultExecutablePath == "" {
		return hc, fmt.Errorf("%s: customHandler.description.defaultExecutablePath is required", path)
	}
	hc.ExecutablePath, hc.Arguments, hc.WorkingDirectory = d.DefaultExecutablePath, d.Arguments, d.WorkingDirectory
	hc.ForwardHTTP = doc.CustomHandler.EnableForwardingHTTPRequest
	if hc.FunctionTimeout, err = parseFunctionTimeout(doc.FunctionTimeout); err != nil {
		return hc, fmt.Errorf("%s: functionTimeout: %w", path, err)
	}
	hc.RoutePrefix = DefaultRoutePrefix
	if p := doc.Extensions.HTTP.RoutePrefix; p != nil {
		hc.RoutePrefix = strings.Trim(*p, "/")
	}
	sb := doc.Extensions.ServiceBus
	hc.MaxConcurrentCalls = firstPositive(sb.MaxConcurrentCalls, sb.MessageHandlerOptions.MaxConcurrentCalls, DefaultMaxConcurrentCalls)
	hc.MaxConcurrentSessions = firstPositive(sb.MaxConcurrentSessions, sb.SessionHandlerOptions.MaxConcurrentSessions, DefaultMaxConcurrentSessions)
	hc.MaxAutoLockRenewalDuration = DefaultMaxAutoLockRenewalDuration
	renew := sb.MaxAutoLockRenewalDuration
	if renew == "" {
		renew = sb.MessageHandlerOptions.MaxAutoRenewDuration
	}
	if renew != "" {
		if hc.MaxAutoLockRenewalDuration, err = ParseTimeSpan(renew); err != nil {
			return hc, fmt.Errorf("%s: maxAutoLockRenewalDuration: %w", path, err)
		}
	}
	return hc, nil
}

func firstPositive(vals ...int) int {
	for _, v := range vals {
		if v > 0 {
			return v
		}
	}
	return 0
}

// parseFunctionTimeout reads "hh:mm:ss", "-1" or -1; absent means the host default, -1 unbounded (0).
func parseFunctionTimeout(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return DefaultFunctionTimeout, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n float64
		if err := json.Unmarshal(raw, &n); err != nil || n != -1 {
			return 0, fmt.Errorf("want \"hh:mm:ss\" or -1, got %s", raw)
		}
		return 0, nil
	}
	if strings.TrimSpace(s) == "-1" {
		return 0, nil
	}
	return ParseTimeSpan(s)
}

// ParseTimeSpan parses a .NET TimeSpan as host.json writes it: "[d.]hh:mm:ss[.fffffff]".
func ParseTimeSpan(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days int64
	if i := strings.IndexByte(s, '.'); i >= 0 && i < strings.IndexByte(s, ':') {
		n, err := strconv.ParseInt(s[:i], 10, 32)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid time span %q: bad day count", s)
		}
		days, s = n, s[i+1:]
	}
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, fmt.Errorf("invalid time span %q: want hh:mm:ss", s)
	}
	h, errH := strconv.Atoi(parts[0])
	m, errM := strconv.Atoi(parts[1])
	sec, errS := strconv.ParseFloat(parts[2], 64)
	if errH != nil || errM != nil || errS != nil || h < 0 || h > 23 || m < 0 || m > 59 || sec < 0 || sec >= 60 {
		return 0, fmt.Errorf("invalid time span %q: want hh:mm:ss", s)
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute +
		time.Duration(sec*float64(time.Second))
	if d <= 0 {
		return 0, fmt.Errorf("invalid time span %q: must be positive", s)
	}
	return d, nil
}

// readFunctions reads <root>/*/function.json and <root>/functions/*/function.json.
func readFunctions(root string, lookup func(string) (string, bool)) ([]*Function, error) {
	var paths []string
	for _, pattern := range []string{"*/function.json", "functions/*/function.json"} {
		m, err := filepath.Glob(filepath.Join(root, pattern))
		if err != nil {
			return nil, fmt.Errorf("list functions: %w", err)
		}
		paths = append(paths, m...)
	}
	seen := map[string]string{}
	var fns []*Function
	for _, p := range paths {
		f, err := readFunction(p, lookup)
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue
		}
		key := strings.ToLower(f.Name)
		if prev, ok := seen[key]; ok {
			return nil, fmt.Errorf("function %s defined twice: %s and %s", f.Name, prev, p)
		}
		seen[key] = p
		fns = append(fns, f)
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].Name < fns[j].Name })
	return fns, nil
}

// readFunction parses one function.json; it returns nil for a disabled function.
func readFunction(path string, lookup func(string) (string, bool)) (*Function, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var doc struct {
		Bindings []Binding `json:"bindings"`
		Disabled any       `json:"disabled"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	f := &Function{Name: filepath.Base(dir), Dir: dir, Bindings: doc.Bindings}
	if isDisabled(doc.Disabled, f.Name, lookup) {
		return nil, nil
	}
	var triggers int
	for i := range f.Bindings {
		b := &f.Bindings[i]
		if !strings.HasSuffix(strings.ToLower(b.Type), "trigger") {
			continue
		}
		triggers++
		if err := resolveBinding(b, lookup); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		f.TriggerBinding = *b
	}
	if triggers != 1 {
		return nil, fmt.Errorf("%s: want exactly one trigger binding, got %d", path, triggers)
	}
	if err := classify(f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

func isDisabled(v any, name string, lookup func(string) (string, bool)) bool {
	if s, ok := lookup("AzureWebJobs." + name + ".Disabled"); ok && strings.EqualFold(s, "true") {
		return true
	}
	switch v := v.(type) {
	case bool:
		return v
	case string:
		if s, ok := lookup(v); ok {
			return strings.EqualFold(s, "true") || s == "1"
		}
		return strings.EqualFold(v, "true")
	}
	return false
}

func classify(f *Function) error {
	b := &f.TriggerBinding
	switch strings.ToLower(b.Type) {
	case "httptrigger":
		f.Trigger = TriggerHTTP
	case "timertrigger":
		f.Trigger = TriggerTimer
		s, err := ncrontab.Parse(b.Schedule)
		if err != nil {
			return fmt.Errorf("binding %s: %w", b.Name, err)
		}
		f.Schedule = s
	case "servicebustrigger":
		f.Trigger = TriggerServiceBus
		if b.QueueName == "" && (b.TopicName == "" || b.SubscriptionName == "") {
			return fmt.Errorf("binding %s: want queueName or topicName and subscriptionName", b.Name)
		}
		if strings.EqualFold(b.Cardinality, "many") {
			return fmt.Errorf("binding %s: cardinality many is not supported by the local host", b.Name)
		}
	default:
		f.Trigger = TriggerUnsupported
	}
	return nil
}

// resolveBinding replaces %NAME% references in the fields the host resolves from app settings.
func resolveBinding(b *Binding, lookup func(string) (string, bool)) error {
	for _, field := range []*string{&b.Schedule, &b.QueueName, &b.TopicName, &b.SubscriptionName, b.Route} {
		if field == nil {
			continue
		}
		v, err := resolveSettings(*field, lookup)
		if err != nil {
			return fmt.Errorf("binding %s: %w", b.Name, err)
		}
		*field = v
	}
	return nil
}

// resolveSettings replaces every %NAME% in s by the setting's value.
func resolveSettings(s string, lookup func(string) (string, bool)) (string, error) {
	var out strings.Builder
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			out.WriteString(s)
			return out.String(), nil
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return "", fmt.Errorf("unterminated %%SETTING%% in %q", s)
		}
		name := s[i+1 : i+1+j]
		v, ok := lookup(name)
		if !ok || name == "" {
			return "", fmt.Errorf("app setting %q is not defined", name)
		}
		out.WriteString(s[:i])
		out.WriteString(v)
		s = s[i+2+j:]
	}
}
