// Package infra holds no code, only the tests that keep the Terraform in this directory consistent with
// what the handler and the Functions bindings use (consistency_test.go). This file reads the three
// sides into plain structs: the Terraform (a static reading of the HCL: literals and references, no
// provider, no plan), functions/*/function.json with host.json, and the facts of the code.
package infra

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// ---------------------------------------------------------------------------------------------------
// Terraform
// ---------------------------------------------------------------------------------------------------

// resource is one resource block.
type resource struct {
	file, typ, name string
	body            *hclsyntax.Body
}

func (r *resource) addr() string { return r.typ + "." + r.name }

// where is "file:line: type.name" for messages.
func (r *resource) where() string {
	return fmt.Sprintf("%s:%d: %s", r.file, r.body.SrcRange.Start.Line, r.addr())
}

func (r *resource) attr(name string) hclsyntax.Expression {
	if a, ok := r.body.Attributes[name]; ok {
		return a.Expr
	}
	return nil
}

// block returns the first nested block of that type, or nil.
func (r *resource) block(typ string) *hclsyntax.Body {
	for _, b := range r.body.Blocks {
		if b.Type == typ {
			return b.Body
		}
	}
	return nil
}

// str is the attribute's value when it is a literal string ("" and false otherwise).
func (r *resource) str(name string) (string, bool) { return litString(r.attr(name)) }

// boolean is the attribute's literal bool; absent is false (every flag checked here defaults to false).
func (r *resource) boolean(name string) bool {
	v, ok := literal(r.attr(name))
	return ok && v.Type() == cty.Bool && v.True()
}

type terraform struct {
	resources []*resource
	locals    map[string]hclsyntax.Expression
	localFile map[string]string
}

// parseTerraform parses files (name -> HCL text); the names are the ones messages show.
func parseTerraform(files map[string]string) (*terraform, error) {
	p := hclparse.NewParser()
	tf := &terraform{locals: map[string]hclsyntax.Expression{}, localFile: map[string]string{}}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		f, diags := p.ParseHCL([]byte(files[n]), n)
		if diags.HasErrors() {
			return nil, fmt.Errorf("%s does not parse: %s", n, diags.Error())
		}
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			switch {
			case b.Type == "resource" && len(b.Labels) == 2:
				tf.resources = append(tf.resources, &resource{file: n, typ: b.Labels[0], name: b.Labels[1], body: b.Body})
			case b.Type == "locals":
				for k, a := range b.Body.Attributes {
					tf.locals[k], tf.localFile[k] = a.Expr, n
				}
			}
		}
	}
	return tf, nil
}

// readTerraform reads every *.tf of dir.
func readTerraform(dir string) (*terraform, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(paths) == 0 {
		return nil, fmt.Errorf("no *.tf in %s: %v", dir, err)
	}
	files := map[string]string{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		files["infra/"+filepath.Base(p)] = string(b)
	}
	return parseTerraform(files)
}

func (tf *terraform) ofType(typ string) []*resource {
	var out []*resource
	for _, r := range tf.resources {
		if r.typ == typ {
			out = append(out, r)
		}
	}
	return out
}

// named finds the resource of that type whose name attribute is the literal name.
func (tf *terraform) named(typ, name string) *resource {
	for _, r := range tf.ofType(typ) {
		if n, _ := r.str("name"); n == name {
			return r
		}
	}
	return nil
}

// literal evaluates an expression that references nothing.
func literal(e hclsyntax.Expression) (cty.Value, bool) {
	if e == nil || len(e.Variables()) > 0 {
		return cty.NilVal, false
	}
	v, diags := e.Value(nil)
	if diags.HasErrors() || !v.IsKnown() || v.IsNull() {
		return cty.NilVal, false
	}
	return v, true
}

func litString(e hclsyntax.Expression) (string, bool) {
	v, ok := literal(e)
	if !ok || v.Type() != cty.String {
		return "", false
	}
	return v.AsString(), true
}

func litInt(e hclsyntax.Expression) (int, bool) {
	v, ok := literal(e)
	if !ok || v.Type() != cty.Number {
		return 0, false
	}
	bf := v.AsBigFloat()
	n, _ := bf.Int64()
	return int(n), true
}

// ref is a plain reference as text, "azurerm_storage_container.snapshots.id" (index keys as [key]),
// or "" when e is anything else.
func ref(e hclsyntax.Expression) string {
	st, ok := e.(*hclsyntax.ScopeTraversalExpr)
	if !ok {
		return ""
	}
	return traversalString(st.Traversal)
}

func traversalString(t hcl.Traversal) string {
	var b strings.Builder
	for _, step := range t {
		switch s := step.(type) {
		case hcl.TraverseRoot:
			b.WriteString(s.Name)
		case hcl.TraverseAttr:
			b.WriteString("." + s.Name)
		case hcl.TraverseIndex:
			if s.Key.Type() == cty.String {
				b.WriteString("[" + s.Key.AsString() + "]")
			} else {
				b.WriteString("[?]")
			}
		}
	}
	return b.String()
}

// refs lists every reference inside e (e.g. the account in trimsuffix(azurerm_storage_account.this.x, "/")).
func refs(e hclsyntax.Expression) []string {
	var out []string
	if e == nil {
		return nil
	}
	for _, t := range e.Variables() {
		out = append(out, traversalString(t))
	}
	return out
}

// resourceOf is the "type.name" a reference starts with ("" for var., local., each. and the like).
func resourceOf(reference string) string {
	parts := strings.SplitN(reference, ".", 3)
	if len(parts) < 2 || !strings.Contains(parts[0], "_") {
		return ""
	}
	name := parts[1]
	if i := strings.IndexByte(name, '['); i >= 0 {
		name = name[:i]
	}
	return parts[0] + "." + name
}

// objectItems lists an object constructor's keys and values; ok is false for anything else.
func objectItems(e hclsyntax.Expression) (map[string]hclsyntax.Expression, bool) {
	oc, ok := e.(*hclsyntax.ObjectConsExpr)
	if !ok {
		return nil, false
	}
	out := map[string]hclsyntax.Expression{}
	for _, it := range oc.Items {
		k := hcl.ExprAsKeyword(it.KeyExpr)
		if k == "" {
			if s, ok := litString(unwrapKey(it.KeyExpr)); ok {
				k = s
			}
		}
		if k != "" {
			out[k] = it.ValueExpr
		}
	}
	return out, true
}

func unwrapKey(e hclsyntax.Expression) hclsyntax.Expression {
	if k, ok := e.(*hclsyntax.ObjectConsKeyExpr); ok {
		return k.Wrapped
	}
	return e
}

// settingsOf collects the keys of an app_settings expression: object constructors, merged, in either
// branch of a condition. References (var.extra_app_settings) are the operator's and add nothing known.
func settingsOf(e hclsyntax.Expression, into map[string]hclsyntax.Expression) {
	switch x := e.(type) {
	case *hclsyntax.ObjectConsExpr:
		items, _ := objectItems(x)
		for k, v := range items {
			into[k] = v
		}
	case *hclsyntax.FunctionCallExpr:
		for _, a := range x.Args {
			settingsOf(a, into)
		}
	case *hclsyntax.ConditionalExpr:
		settingsOf(x.TrueResult, into)
		settingsOf(x.FalseResult, into)
	case *hclsyntax.ParenthesesExpr:
		settingsOf(x.Expression, into)
	}
}

// roleAssignment is one role on one scope, as written (scope as a reference or a literal).
type roleAssignment struct {
	res   *resource
	key   string // the for_each key, or ""
	role  string
	scope string // reference text, e.g. "azurerm_storage_container.snapshots.id"
	// principal is the reference of principal_id.
	principal string
}

func (a roleAssignment) where() string {
	if a.key == "" {
		return a.res.where()
	}
	return fmt.Sprintf("%s[%q]", a.res.where(), a.key)
}

// roleAssignments expands each azurerm_role_assignment: a literal role and a referenced scope, or a
// for_each over a local map whose values are the role (a string) or {role, scope} objects.
func (tf *terraform) roleAssignments() ([]roleAssignment, []string) {
	var out []roleAssignment
	var unreadable []string
	for _, r := range tf.ofType("azurerm_role_assignment") {
		principal := ref(r.attr("principal_id"))
		if fe := r.attr("for_each"); fe != nil && strings.HasPrefix(ref(fe), "local.") {
			items, ok := objectItems(tf.locals[strings.TrimPrefix(ref(fe), "local.")])
			if !ok {
				unreadable = append(unreadable, r.where())
				continue
			}
			for k, v := range items {
				a := roleAssignment{res: r, key: k, principal: principal}
				fields, isObj := objectItems(v)
				pick := func(attr string) string {
					e := r.attr(attr)
					switch ref(e) {
					case "each.value":
						if s, ok := litString(v); ok {
							return s
						}
					case "each.value.role", "each.value.scope":
						f := fields[strings.TrimPrefix(ref(e), "each.value.")]
						if s, ok := litString(f); ok {
							return s
						}
						return ref(f)
					}
					if s, ok := litString(e); ok {
						return s
					}
					return ref(e)
				}
				_ = isObj
				a.role, a.scope = pick("role_definition_name"), pick("scope")
				out = append(out, a)
			}
			continue
		}
		role, _ := r.str("role_definition_name")
		out = append(out, roleAssignment{res: r, role: role, scope: ref(r.attr("scope")), principal: principal})
	}
	return out, unreadable
}

// iso8601 parses the durations Service Bus takes: P1D, PT10M, P7DT12H, PT30S.
var iso8601Re = regexp.MustCompile(`^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$`)

func iso8601(s string) (time.Duration, bool) {
	m := iso8601Re.FindStringSubmatch(s)
	if m == nil || s == "P" || s == "PT" {
		return 0, false
	}
	var d time.Duration
	for i, unit := range []time.Duration{24 * time.Hour, time.Hour, time.Minute, time.Second} {
		if m[i+1] != "" {
			n, _ := strconv.Atoi(m[i+1])
			d += time.Duration(n) * unit
		}
	}
	return d, true
}

// ---------------------------------------------------------------------------------------------------
// Functions: function.json and host.json
// ---------------------------------------------------------------------------------------------------

type binding struct {
	Type              string `json:"type"`
	Direction         string `json:"direction"`
	QueueName         string `json:"queueName"`
	TopicName         string `json:"topicName"`
	SubscriptionName  string `json:"subscriptionName"`
	Connection        string `json:"connection"`
	Schedule          string `json:"schedule"`
	IsSessionsEnabled bool   `json:"isSessionsEnabled"`
}

type function struct {
	file     string    // "functions/BackupJobs/function.json"
	Bindings []binding `json:"bindings"`
}

type hostJSON struct {
	file            string
	FunctionTimeout string `json:"functionTimeout"`
	Extensions      struct {
		ServiceBus struct {
			MaxAutoLockRenewalDuration string `json:"maxAutoLockRenewalDuration"`
		} `json:"serviceBus"`
	} `json:"extensions"`
}

func parseFunction(file string, data []byte) (function, error) {
	f := function{file: file}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("%s: %w", file, err)
	}
	return f, nil
}

func parseHost(file string, data []byte) (hostJSON, error) {
	h := hostJSON{file: file}
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("%s: %w", file, err)
	}
	return h, nil
}

func readFunctions(root string) ([]function, hostJSON, error) {
	paths, err := filepath.Glob(filepath.Join(root, "functions", "*", "function.json"))
	if err != nil || len(paths) == 0 {
		return nil, hostJSON{}, fmt.Errorf("no functions/*/function.json under %s: %v", root, err)
	}
	var fns []function
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, hostJSON{}, err
		}
		rel, _ := filepath.Rel(root, p)
		f, err := parseFunction(filepath.ToSlash(rel), data)
		if err != nil {
			return nil, hostJSON{}, err
		}
		fns = append(fns, f)
	}
	data, err := os.ReadFile(filepath.Join(root, "host.json"))
	if err != nil {
		return nil, hostJSON{}, err
	}
	h, err := parseHost("host.json", data)
	return fns, h, err
}

// timeSpan parses host.json's .NET TimeSpan text: "hh:mm:ss" or "d.hh:mm:ss".
func timeSpan(s string) (time.Duration, bool) {
	var days int
	if i := strings.IndexByte(s, '.'); i >= 0 && i < strings.IndexByte(s, ':') {
		d, err := strconv.Atoi(s[:i])
		if err != nil {
			return 0, false
		}
		days, s = d, s[i+1:]
	}
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return 0, false
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil {
			return 0, false
		}
		n[i] = v
	}
	return time.Duration(days)*24*time.Hour + time.Duration(n[0])*time.Hour + time.Duration(n[1])*time.Minute +
		time.Duration(n[2])*time.Second, true
}

// ---------------------------------------------------------------------------------------------------
// Go constants the tests cannot import (unexported)
// ---------------------------------------------------------------------------------------------------

// intConst reads the integer constant name from a Go file.
func intConst(path, name string) (int, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return 0, err
	}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, s := range gd.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if n.Name != name || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.INT {
					return strconv.Atoi(lit.Value)
				}
				return 0, fmt.Errorf("%s: const %s is not an integer literal", path, name)
			}
		}
	}
	return 0, fmt.Errorf("%s: no const %s", path, name)
}
