package infra

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// codeFacts is what the code uses, gathered by codeFactsFromRepo (consistency_test.go) from the
// packages' constants and config.FromEnv, or written by hand for the checker's own tests.
type codeFacts struct {
	// Queues the code names: constant -> queue, e.g. "backup.QueueJobs" -> "backup-jobs".
	Queues map[string]string
	// Topic is backup.TopicBackupEvents.
	Topic string
	// SessionQueue is the one queue whose messages carry a SessionId (backup.QueueJobs).
	SessionQueue string
	// PublishedTo are the entities the service sends to; ReceivedFrom those it receives from or peeks
	// outside the triggers (the health check). Queue or topic names.
	PublishedTo  []string
	ReceivedFrom []string
	// MinDuplicateWindow is, per entity, the shortest duplicate-detection window its MessageIds need.
	MinDuplicateWindow map[string]time.Duration
	// MaxAttempts is how many attempts of one job the code makes (backup.maxAttempts).
	MaxAttempts int
	// Tables the handler creates at start (tablestore.Tables()).
	Tables []string
	// Containers: the setting -> its default in config (SNAPSHOTS_CONTAINER -> "snapshots").
	Containers map[string]string
	// Settings is every environment variable config.FromEnv reads.
	Settings []string
	// AbsentInAzure are settings the handler reads that the function app deliberately does not set,
	// with the reason; Forbidden are those that must never be set in Azure (secrets).
	AbsentInAzure map[string]string
	Forbidden     map[string]string
	// HostSettings are app settings for the Functions host or the platform, not the handler.
	HostSettings map[string]string
}

// maxLockDuration is the longest peek-lock Service Bus grants.
const maxLockDuration = 5 * time.Minute

// problems collects the sentences of the failures.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// check compares the three sides and returns one sentence per disagreement (none when consistent).
func check(tf *terraform, code codeFacts, fns []function, host hostJSON) []string {
	var p problems
	apps := tf.ofType("azurerm_linux_function_app")
	if len(apps) != 1 {
		p.add("infra/*.tf declares %d azurerm_linux_function_app resources; the checks expect exactly one, the service's function app.", len(apps))
		return p
	}
	app := apps[0]
	settings := map[string]hclsyntax.Expression{}
	if e := app.attr("app_settings"); e != nil {
		settingsOf(e, settings)
	}
	// Settings the provider writes from arguments of the resource rather than app_settings.
	provided := map[string]string{}
	if _, ok := app.body.Attributes["storage_account_name"]; ok && app.boolean("storage_uses_managed_identity") {
		provided["AzureWebJobsStorage__accountName"] = "storage_account_name with storage_uses_managed_identity"
	}
	if sc := app.block("site_config"); sc != nil {
		if _, ok := sc.Attributes["application_insights_connection_string"]; ok {
			provided["APPLICATIONINSIGHTS_CONNECTION_STRING"] = "site_config.application_insights_connection_string"
		}
	}
	has := func(name string) bool {
		_, a := settings[name]
		_, b := provided[name]
		return a || b
	}

	checkEntities(&p, tf, code, fns)
	connections, schedules := checkBindings(&p, tf, code, fns, app, settings, has)
	checkQueueSettings(&p, tf, code, fns, host)
	checkStorage(&p, tf, code, app, settings)
	checkSettings(&p, code, app, settings, has, connections, schedules)
	checkRoles(&p, tf, code, app, settings)
	sort.Strings(p)
	return p
}

// ---------------------------------------------------------------------------------------------------

// checkEntities: every queue and topic the code names exists in infra under that name, and every queue
// and topic in infra is one the code names (a renamed entity shows on both sides).
func checkEntities(p *problems, tf *terraform, code codeFacts, fns []function) {
	consts := sortedKeys(code.Queues)
	known := map[string]bool{code.Topic: true}
	for _, c := range consts {
		q := code.Queues[c]
		known[q] = true
		if tf.named("azurerm_servicebus_queue", q) == nil {
			p.add("infra/main.tf has no azurerm_servicebus_queue named %q, which the code uses (%s): add the queue or rename the existing one to %q.", q, c, q)
		}
	}
	if tf.named("azurerm_servicebus_topic", code.Topic) == nil {
		p.add("infra/main.tf has no azurerm_servicebus_topic named %q, which the code publishes to (backup.TopicBackupEvents): add the topic or rename the existing one to %q.", code.Topic, code.Topic)
	}
	for _, typ := range []string{"azurerm_servicebus_queue", "azurerm_servicebus_topic"} {
		for _, r := range tf.ofType(typ) {
			if n, _ := r.str("name"); !known[n] {
				p.add("%s is named %q, which no constant of the code names (queues: %s; topic: %s): rename it to the code's name or remove it.",
					r.where(), n, strings.Join(values(code.Queues), ", "), code.Topic)
			}
		}
	}
	// The topic's consumers: at least one subscription on it.
	if t := tf.named("azurerm_servicebus_topic", code.Topic); t != nil {
		n := 0
		for _, s := range tf.ofType("azurerm_servicebus_subscription") {
			if resourceOf(ref(s.attr("topic_id"))) == t.addr() {
				n++
			}
		}
		if n == 0 {
			p.add("%s has no azurerm_servicebus_subscription (topic_id = %s.id): events published to %q would be dropped; add the consumers' subscription.", t.where(), t.addr(), code.Topic)
		}
	}
}

// checkBindings: each trigger's queue exists and is one the code names; each connection is an
// identity-based Service Bus connection in app_settings; each %SETTING% schedule is an app setting.
// It returns the connection names and schedule settings the bindings use.
func checkBindings(p *problems, tf *terraform, code codeFacts, fns []function, app *resource,
	settings map[string]hclsyntax.Expression, has func(string) bool) (connections, schedules map[string]bool) {
	connections, schedules = map[string]bool{}, map[string]bool{}
	codeQueue := map[string]bool{}
	for _, q := range code.Queues {
		codeQueue[q] = true
	}
	for _, f := range fns {
		for _, b := range f.Bindings {
			switch b.Type {
			case "serviceBusTrigger", "serviceBus":
				if b.QueueName != "" {
					if tf.named("azurerm_servicebus_queue", b.QueueName) == nil {
						p.add("%s binds queue %q, which infra/main.tf does not create: add an azurerm_servicebus_queue named %q or fix the binding.", f.file, b.QueueName, b.QueueName)
					}
					if !codeQueue[b.QueueName] {
						p.add("%s binds queue %q, which is none of the code's queue constants (%s): rename the binding or the constant so they agree.", f.file, b.QueueName, strings.Join(values(code.Queues), ", "))
					}
				}
				if b.TopicName != "" && tf.named("azurerm_servicebus_topic", b.TopicName) == nil {
					p.add("%s binds topic %q, which infra/main.tf does not create: add it or fix the binding.", f.file, b.TopicName)
				}
				if b.Connection == "" {
					p.add("%s: the %s binding names no connection: set \"connection\": \"ServiceBusConnection\" (the identity-based connection in app_settings).", f.file, b.Type)
				} else {
					connections[b.Connection] = true
				}
			case "timerTrigger":
				if strings.HasPrefix(b.Schedule, "%") && strings.HasSuffix(b.Schedule, "%") && len(b.Schedule) > 2 {
					name := strings.Trim(b.Schedule, "%")
					schedules[name] = true
					if !has(name) {
						p.add("%s takes its schedule from app setting %s, which %s does not set: add %s to its app_settings.", f.file, name, app.where(), name)
					}
				}
			}
		}
	}
	for _, c := range sortedKeys(connections) {
		// Identity-based: <connection>__fullyQualifiedNamespace, with the user-assigned identity. A plain
		// <connection> would be a connection string, a secret the deployment does not have.
		if !has(c + "__fullyQualifiedNamespace") {
			p.add("%s has no app setting %s__fullyQualifiedNamespace, which the Service Bus bindings' connection %q needs: add it (the namespace's host name) with %s__credential = \"managedidentity\" and %s__clientId.", app.where(), c, c, c, c)
		}
		if v, ok := settings[c+"__credential"]; !ok || !isLiteral(v, "managedidentity") {
			p.add("%s: app setting %s__credential must be \"managedidentity\", so the bindings' connection %q authenticates with the managed identity: set it.", app.where(), c, c)
		}
		if v, ok := settings[c+"__clientId"]; !ok || !strings.HasSuffix(refOf(v), ".client_id") {
			p.add("%s: app setting %s__clientId must be the user-assigned identity's client_id (azurerm_user_assigned_identity.app.client_id), or the host cannot pick the identity for connection %q: set it.", app.where(), c, c)
		}
		if has(c) {
			p.add("%s sets app setting %s, a connection string: remove it; the connection is identity-based (%s__fullyQualifiedNamespace).", app.where(), c, c)
		}
	}
	return connections, schedules
}

// checkQueueSettings encodes what the code relies on from each entity's settings.
func checkQueueSettings(p *problems, tf *terraform, code codeFacts, fns []function, host hostJSON) {
	// Sessions: the code sets a SessionId (the environment id) only on the jobs queue, so one
	// environment's jobs run one at a time and in order. Sessions on another queue would make its
	// messages (which have no SessionId) unsendable; sessions off on the jobs queue would run a restore
	// next to a backup of the same database. The trigger must agree with the queue, or the host fails
	// to receive.
	for _, q := range tf.ofType("azurerm_servicebus_queue") {
		name, _ := q.str("name")
		want := name == code.SessionQueue
		if q.boolean("requires_session") != want {
			if want {
				p.add("%s (%q) must have requires_session = true: the code sends its messages with SessionId = environment id so an environment's jobs never overlap; set it (it forces a new queue).", q.where(), name)
			} else {
				p.add("%s (%q) has requires_session = true, but the code sends its messages without a SessionId: remove it; only %q uses sessions.", q.where(), name, code.SessionQueue)
			}
		}
		for _, f := range fns {
			for _, b := range f.Bindings {
				if b.Type == "serviceBusTrigger" && b.QueueName == name && b.IsSessionsEnabled != q.boolean("requires_session") {
					p.add("%s has isSessionsEnabled = %t but %s (%q) has requires_session = %t: make them agree (sessions only on %q).", f.file, b.IsSessionsEnabled, q.where(), name, q.boolean("requires_session"), code.SessionQueue)
				}
			}
		}
	}

	// Duplicate detection: every MessageId the service (or the portal, on environment-events) sends is
	// derived from what the message is (operation id and send number, "<environment>/<day>[/<try>]",
	// event id), so a retried or repeated send is dropped by the broker, within the window. The window
	// must cover how long the same id may be sent again: a day for the automatic tries (a timer firing
	// twice, overlapping schedules and a resumed fan-out all send the day's ids again during that day),
	// minutes for SDK retries elsewhere. Both settings force a new entity when changed.
	for _, entity := range sortedKeys(code.MinDuplicateWindow) {
		min := code.MinDuplicateWindow[entity]
		r := tf.named("azurerm_servicebus_queue", entity)
		if r == nil {
			r = tf.named("azurerm_servicebus_topic", entity)
		}
		if r == nil {
			continue // reported by checkEntities
		}
		if !r.boolean("requires_duplicate_detection") {
			p.add("%s (%q) must have requires_duplicate_detection = true: its senders set a MessageId so that a repeated send is dropped; set it with duplicate_detection_history_time_window of at least %s.", r.where(), entity, iso(min))
			continue
		}
		w := 10 * time.Minute // Azure's default window
		if s, ok := r.str("duplicate_detection_history_time_window"); ok {
			if d, ok := iso8601(s); ok {
				w = d
			} else {
				p.add("%s (%q): duplicate_detection_history_time_window %q is not an ISO 8601 duration like PT10M or P1D: fix it.", r.where(), entity, s)
				continue
			}
		}
		if w < min {
			p.add("%s (%q): duplicate_detection_history_time_window is %s, shorter than the %s its MessageIds need to be dropped when sent again: set it to %s or more.", r.where(), entity, iso(w), iso(min), iso(min))
		}
	}

	// Locks: Service Bus grants at most 5 minutes; the Functions host renews the lock (for the jobs
	// queue, the session lock) up to host.json maxAutoLockRenewalDuration, which must reach
	// functionTimeout or a job running that long loses its message (and its session) half-way and is
	// delivered to a second worker.
	for _, typ := range []string{"azurerm_servicebus_queue", "azurerm_servicebus_subscription"} {
		for _, r := range tf.ofType(typ) {
			if s, ok := r.str("lock_duration"); ok {
				if d, ok := iso8601(s); !ok || d > maxLockDuration {
					p.add("%s: lock_duration %q exceeds Service Bus's maximum of PT5M: set it to PT5M or less; the host renews the lock for long work.", r.where(), s)
				}
			}
		}
	}
	timeout, okT := timeSpan(host.FunctionTimeout)
	renewal, okR := timeSpan(host.Extensions.ServiceBus.MaxAutoLockRenewalDuration)
	switch {
	case !okT:
		p.add("%s: functionTimeout %q is not a time span like 12:00:00: set it (Elastic Premium allows an unbounded one; the jobs need hours).", host.file, host.FunctionTimeout)
	case !okR:
		p.add("%s: extensions.serviceBus.maxAutoLockRenewalDuration %q is not a time span: set it to functionTimeout (%s), so a job keeps its message lock as long as it may run.", host.file, host.Extensions.ServiceBus.MaxAutoLockRenewalDuration, host.FunctionTimeout)
	case renewal < timeout:
		p.add("%s: extensions.serviceBus.maxAutoLockRenewalDuration %s is shorter than functionTimeout %s: a job running longer loses its lock (lock_duration is at most 5 minutes) and is delivered again while it runs; raise it to %s.", host.file, host.Extensions.ServiceBus.MaxAutoLockRenewalDuration, host.FunctionTimeout, host.FunctionTimeout)
	}

	// Deliveries of the jobs queue: every delivery that claims the operation counts one attempt, the
	// code gives up after maxAttempts (marking the operation Failed), and a worker that dies during the
	// last attempt is only noticed by the next delivery (attempt maxAttempts+1 fails it at once). Shutdown
	// interruptions give their attempt back and settling failures are redelivered too, so the queue must
	// deliver at least maxAttempts+1 times or the broker dead-letters a job the code still means to try
	// (leaving it to the recovery timer, minutes later).
	if q := tf.named("azurerm_servicebus_queue", code.SessionQueue); q != nil && code.MaxAttempts > 0 {
		n := 10 // Azure's default
		if e := q.attr("max_delivery_count"); e != nil {
			if v, ok := litInt(e); ok {
				n = v
			}
		}
		if n < code.MaxAttempts+1 {
			p.add("%s (%q): max_delivery_count %d is below the %d deliveries the code's %d attempts need (backup.maxAttempts, internal/backup/progress.go): raise it to at least %d.", q.where(), code.SessionQueue, n, code.MaxAttempts+1, code.MaxAttempts, code.MaxAttempts+1)
		}
	}
}

// checkStorage: the containers the config defaults to exist in the account STORAGE_BLOB_URL names and
// their app settings point at them; the tables are the handler's (no azurerm_storage_table).
func checkStorage(p *problems, tf *terraform, code codeFacts, app *resource, settings map[string]hclsyntax.Expression) {
	dataAccount := ""
	if e, ok := settings["STORAGE_BLOB_URL"]; ok {
		for _, rf := range refsOf(e) {
			if strings.HasPrefix(rf, "azurerm_storage_account.") {
				dataAccount = resourceOf(rf)
			}
		}
	}
	if dataAccount == "" {
		p.add("%s: app setting STORAGE_BLOB_URL must be an azurerm_storage_account's primary_blob_endpoint, so the checks know the service's data account: set it.", app.where())
	}
	if e, ok := settings["STORAGE_TABLE_URL"]; ok && dataAccount != "" {
		acc := ""
		for _, rf := range refsOf(e) {
			acc = resourceOf(rf)
		}
		if acc != dataAccount {
			p.add("%s: STORAGE_TABLE_URL points at %s but STORAGE_BLOB_URL at %s: the roles are granted on one data account; use the same account for both.", app.where(), acc, dataAccount)
		}
	}
	for _, setting := range sortedKeys(code.Containers) {
		want := code.Containers[setting]
		c := tf.named("azurerm_storage_container", want)
		if c == nil {
			p.add("infra/main.tf has no azurerm_storage_container named %q, the default of %s in internal/config/config.go: add it (or rename the container to %q).", want, setting, want)
			continue
		}
		if dataAccount != "" && resourceOf(ref(c.attr("storage_account_id"))) != dataAccount {
			p.add("%s is not in %s, the account of STORAGE_BLOB_URL: the handler looks for %q there; set storage_account_id = %s.id.", c.where(), dataAccount, want, dataAccount)
		}
		e, ok := settings[setting]
		if !ok {
			p.add("%s does not set %s: set it to %s.name, so the container's name is stated once.", app.where(), setting, c.addr())
		} else if refOf(e) != c.addr()+".name" && !isLiteral(e, want) {
			p.add("%s: app setting %s is not %s.name (%q): point it at that container.", app.where(), setting, c.addr(), want)
		}
	}
	for _, t := range tf.ofType("azurerm_storage_table") {
		p.add("%s: the handler owns its tables (it creates %s at start, with TABLE_PREFIX): remove the resource, or it will disagree with the prefix and with tables added in code.", t.where(), strings.Join(code.Tables, ", "))
	}
	for _, t := range code.Tables {
		if len(t)+20 > 63 {
			p.add("internal/tablestore/client.go: table %q with a 20-character TABLE_PREFIX exceeds Azure's 63 characters: shorten it.", t)
		}
	}
}

// checkSettings: every setting config.FromEnv reads is set in app_settings or deliberately absent
// (the allow-list, each with its reason); no secret is set; and nothing in app_settings is unread.
func checkSettings(p *problems, code codeFacts, app *resource, settings map[string]hclsyntax.Expression,
	has func(string) bool, connections, schedules map[string]bool) {
	read := map[string]bool{}
	for _, s := range code.Settings {
		read[s] = true
		_, absent := code.AbsentInAzure[s]
		_, forbidden := code.Forbidden[s]
		if !has(s) && !absent && !forbidden {
			p.add("%s does not set %s, which internal/config/config.go reads: add it to app_settings, or to the commented allow-list absentInAzure in infra/consistency_test.go with the reason it is deliberately absent.", app.where(), s)
		}
	}
	for _, s := range sortedKeys(code.Forbidden) {
		if has(s) {
			p.add("%s sets %s: remove it; %s.", app.where(), s, code.Forbidden[s])
		}
	}
	for _, s := range sortedKeys(settings) {
		if read[s] || schedules[s] || code.HostSettings[s] != "" {
			continue
		}
		if i := strings.Index(s, "__"); i > 0 && connections[s[:i]] {
			continue
		}
		p.add("%s sets app setting %s, which neither internal/config/config.go nor a binding reads (renamed in code?): rename or remove it, or list it in hostSettings in infra/consistency_test.go if the Functions host reads it.", app.where(), s)
	}
}

// checkRoles: the managed identity holds exactly the roles the code needs, each on the narrowest scope
// (containers and entities, not accounts and namespaces); anything else is too broad.
func checkRoles(p *problems, tf *terraform, code codeFacts, app *resource, settings map[string]hclsyntax.Expression) {
	assignments, unreadable := tf.roleAssignments()
	for _, w := range unreadable {
		p.add("%s: the checks cannot read its for_each (a local map of role strings or {role, scope} objects is expected): write it in that form.", w)
	}
	dataAccount := ""
	if e, ok := settings["STORAGE_BLOB_URL"]; ok {
		for _, rf := range refsOf(e) {
			dataAccount = resourceOf(rf)
		}
	}
	runtimeAccount := ""
	if n := refOf(app.attr("storage_account_name")); n != "" {
		runtimeAccount = resourceOf(n)
	}
	if runtimeAccount != "" && runtimeAccount == dataAccount {
		p.add("%s: storage_account_name (AzureWebJobsStorage) is %s, the service's data account: the Functions runtime needs Storage Blob Data Owner on its account, which would then reach every archive; give the runtime an account of its own.", app.where(), dataAccount)
	}

	type grant struct{ role, scope string }
	allowed := map[grant]string{} // grant -> why
	required := map[grant]bool{}
	need := func(role, scope, why string, req bool) {
		g := grant{role, scope}
		allowed[g] = why
		if req {
			required[g] = true
		}
	}
	for _, setting := range sortedKeys(code.Containers) {
		if c := tf.named("azurerm_storage_container", code.Containers[setting]); c != nil {
			need("Storage Blob Data Contributor", c.addr()+".id", "the service writes "+code.Containers[setting], true)
		}
	}
	if dataAccount != "" {
		need("Storage Blob Delegator", dataAccount+".id", "user-delegation keys for the links and copy sources", true)
		need("Storage Table Data Contributor", dataAccount+".id", "the status tables, created at start", true)
	}
	if runtimeAccount != "" && runtimeAccount != dataAccount {
		need("Storage Blob Data Owner", runtimeAccount+".id", "the Functions runtime's own account", true)
		need("Storage Queue Data Contributor", runtimeAccount+".id", "the Functions runtime's own account", false)
		need("Storage Table Data Contributor", runtimeAccount+".id", "the Functions runtime's own account", false)
	}
	entity := func(name string) *resource {
		if r := tf.named("azurerm_servicebus_queue", name); r != nil {
			return r
		}
		return tf.named("azurerm_servicebus_topic", name)
	}
	for _, n := range code.ReceivedFrom {
		if r := entity(n); r != nil {
			need("Azure Service Bus Data Receiver", r.addr()+".id", "the service receives from "+n, true)
		}
	}
	for _, n := range code.PublishedTo {
		if r := entity(n); r != nil {
			need("Azure Service Bus Data Sender", r.addr()+".id", "the service sends to "+n, true)
		}
	}
	need("AcrPull", "var.container_registry_id", "pulling the image", false)

	seen := map[grant]bool{}
	for _, a := range assignments {
		if !strings.HasPrefix(a.principal, "azurerm_user_assigned_identity.") {
			continue // the portal's roles and the like: not the service's identity
		}
		g := grant{a.role, a.scope}
		seen[g] = true
		if _, ok := allowed[g]; !ok {
			p.add("%s gives the service's identity %q on %s, which is no role the code needs on that scope (broader than needed, or on a resource the code does not use): use the roles listed in infra/main.tf's local.app_roles (Blob Data Contributor per container, Blob Delegator and Table Data Contributor on the data account, Service Bus Data Receiver/Sender per queue or topic) and remove this one.", a.where(), a.role, orUnknown(a.scope))
		}
	}
	keys := make([]grant, 0, len(required))
	for g := range required {
		keys = append(keys, g)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].scope+keys[i].role < keys[j].scope+keys[j].role })
	for _, g := range keys {
		if !seen[g] {
			p.add("infra/main.tf gives the service's identity no %q on %s, which it needs (%s): add it to local.app_roles.", g.role, g.scope, allowed[g])
		}
	}
}

// ---------------------------------------------------------------------------------------------------

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func values(m map[string]string) []string {
	var out []string
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}

func iso(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("P%dD", d/(24*time.Hour))
	}
	out := "PT"
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Hour, "H"}, {time.Minute, "M"}, {time.Second, "S"}} {
		if n := d / u.unit; n > 0 {
			out += fmt.Sprintf("%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "a scope the checks cannot read"
	}
	return s
}

func isLiteral(e hclsyntax.Expression, want string) bool {
	s, ok := litString(e)
	return ok && s == want
}

func refOf(e hclsyntax.Expression) string {
	if e == nil {
		return ""
	}
	return ref(e)
}

func refsOf(e hclsyntax.Expression) []string { return refs(e) }
