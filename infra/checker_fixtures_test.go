package infra

import (
	"strings"
	"testing"
	"time"
)

// A small deployment the checker accepts, and the facts of a small code base it matches. Each case of
// TestCheckerCatches breaks one thing on one side and expects the failure that names it.
const fixtureHCL = `
resource "azurerm_user_assigned_identity" "app" {
  name = "id-x"
}

resource "azurerm_storage_account" "this" {
  name = "xst"
}

resource "azurerm_storage_account" "runtime" {
  name = "xfn"
}

resource "azurerm_storage_container" "snapshots" {
  name               = "snapshots"
  storage_account_id = azurerm_storage_account.this.id
}

resource "azurerm_servicebus_queue" "jobs" {
  name                                    = "jobs"
  requires_session                        = true
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "PT10M"
  lock_duration                           = "PT5M"
  max_delivery_count                      = 10
}

resource "azurerm_servicebus_queue" "auto" {
  name                                    = "auto"
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "P1D"
}

resource "azurerm_servicebus_topic" "events" {
  name                         = "events"
  requires_duplicate_detection = true
}

resource "azurerm_servicebus_subscription" "portal" {
  name     = "portal"
  topic_id = azurerm_servicebus_topic.events.id
}

resource "azurerm_linux_function_app" "this" {
  storage_account_name          = azurerm_storage_account.runtime.name
  storage_uses_managed_identity = true

  app_settings = merge(var.extra_app_settings, {
    FUNCTIONS_WORKER_RUNTIME                      = "custom"
    ServiceBusConnection__fullyQualifiedNamespace = local.servicebus_fqdn
    ServiceBusConnection__credential              = "managedidentity"
    ServiceBusConnection__clientId                = azurerm_user_assigned_identity.app.client_id
    STORAGE_BLOB_URL                              = trimsuffix(azurerm_storage_account.this.primary_blob_endpoint, "/")
    SNAPSHOTS_CONTAINER                           = azurerm_storage_container.snapshots.name
    NIGHTLY_SCHEDULE                              = var.nightly_schedule
    LOG_LEVEL                                     = var.log_level
  })
}

locals {
  app_roles = {
    snapshots = { role = "Storage Blob Data Contributor", scope = azurerm_storage_container.snapshots.id }
    delegator = { role = "Storage Blob Delegator", scope = azurerm_storage_account.this.id }
    tables    = { role = "Storage Table Data Contributor", scope = azurerm_storage_account.this.id }
    jobs_rx   = { role = "Azure Service Bus Data Receiver", scope = azurerm_servicebus_queue.jobs.id }
    auto_rx   = { role = "Azure Service Bus Data Receiver", scope = azurerm_servicebus_queue.auto.id }
    jobs_tx   = { role = "Azure Service Bus Data Sender", scope = azurerm_servicebus_queue.jobs.id }
    events_tx = { role = "Azure Service Bus Data Sender", scope = azurerm_servicebus_topic.events.id }
  }
}

resource "azurerm_role_assignment" "app" {
  for_each             = local.app_roles
  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

resource "azurerm_role_assignment" "runtime" {
  scope                = azurerm_storage_account.runtime.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}
`

const fixtureJobsFunction = `{"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "msg",
  "queueName": "jobs", "connection": "ServiceBusConnection", "isSessionsEnabled": true}]}`

const fixtureAutoFunction = `{"bindings": [{"type": "serviceBusTrigger", "direction": "in", "name": "msg",
  "queueName": "auto", "connection": "ServiceBusConnection"}]}`

const fixtureTimerFunction = `{"bindings": [{"type": "timerTrigger", "direction": "in", "name": "timer",
  "schedule": "%NIGHTLY_SCHEDULE%"}]}`

const fixtureHost = `{"version": "2.0", "functionTimeout": "12:00:00",
  "extensions": {"serviceBus": {"maxAutoLockRenewalDuration": "12:00:00"}}}`

func fixtureFacts() codeFacts {
	return codeFacts{
		Queues:             map[string]string{"backup.QueueJobs": "jobs", "backup.QueueAutomatic": "auto"},
		Topic:              "events",
		SessionQueue:       "jobs",
		PublishedTo:        []string{"jobs", "events"},
		ReceivedFrom:       []string{"jobs", "auto"},
		MinDuplicateWindow: map[string]time.Duration{"jobs": 10 * time.Minute, "auto": 24 * time.Hour, "events": 10 * time.Minute},
		MaxAttempts:        3,
		Tables:             []string{"Snapshots"},
		Containers:         map[string]string{"SNAPSHOTS_CONTAINER": "snapshots"},
		Settings:           []string{"STORAGE_BLOB_URL", "SNAPSHOTS_CONTAINER", "LOG_LEVEL", "PG_PASSWORD", "FUNCTIONS_CUSTOMHANDLER_PORT"},
		AbsentInAzure:      map[string]string{"FUNCTIONS_CUSTOMHANDLER_PORT": "set by the host"},
		Forbidden:          map[string]string{"PG_PASSWORD": "Entra tokens instead"},
		HostSettings:       map[string]string{"FUNCTIONS_WORKER_RUNTIME": "the host"},
	}
}

// fixture is one variant of the three sides.
type fixture struct {
	hcl, jobs, host string
	facts           codeFacts
}

func (f fixture) run(t *testing.T) []string {
	t.Helper()
	tf, err := parseTerraform(map[string]string{"infra/main.tf": f.hcl})
	if err != nil {
		t.Fatal(err)
	}
	var fns []function
	for name, text := range map[string]string{"Jobs": f.jobs, "Auto": fixtureAutoFunction, "Nightly": fixtureTimerFunction} {
		fn, err := parseFunction("functions/"+name+"/function.json", []byte(text))
		if err != nil {
			t.Fatal(err)
		}
		fns = append(fns, fn)
	}
	host, err := parseHost("host.json", []byte(f.host))
	if err != nil {
		t.Fatal(err)
	}
	return check(tf, f.facts, fns, host)
}

func baseFixture() fixture {
	return fixture{hcl: fixtureHCL, jobs: fixtureJobsFunction, host: fixtureHost, facts: fixtureFacts()}
}

func TestCheckerAcceptsTheFixture(t *testing.T) {
	if got := baseFixture().run(t); len(got) != 0 {
		t.Fatalf("the consistent fixture fails:\n%s", strings.Join(got, "\n"))
	}
}

// replace changes old to new in s, and fails the test when old is not there (a fixture edit that
// silently does nothing would prove nothing).
func replace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("fixture has no %q", old)
	}
	return strings.Replace(s, old, new, 1)
}

func TestCheckerCatches(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(t *testing.T, f *fixture)
		wants []string // each must appear in one failure
	}{
		{"a queue renamed in infra only", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `name                                    = "auto"`, `name                                    = "automatic"`)
		}, []string{
			`infra/main.tf has no azurerm_servicebus_queue named "auto", which the code uses (backup.QueueAutomatic)`,
			`azurerm_servicebus_queue.auto is named "automatic", which no constant of the code names`,
			`functions/Auto/function.json binds queue "auto", which infra/main.tf does not create`,
		}},
		{"a queue renamed in code only", func(t *testing.T, f *fixture) {
			f.facts.Queues["backup.QueueAutomatic"] = "automatic"
			f.facts.ReceivedFrom = []string{"jobs", "automatic"}
		}, []string{`no azurerm_servicebus_queue named "automatic"`, `functions/Auto/function.json binds queue "auto", which is none of the code's queue constants`}},
		{"the topic renamed", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `name                         = "events"`, `name                         = "outcomes"`)
		}, []string{`no azurerm_servicebus_topic named "events"`}},
		{"sessions off on the jobs queue", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "requires_session                        = true\n", "")
		}, []string{`azurerm_servicebus_queue.jobs ("jobs") must have requires_session = true`, `isSessionsEnabled = true but`}},
		{"sessions on another queue", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `name                                    = "auto"`, "name = \"auto\"\nrequires_session = true")
		}, []string{`azurerm_servicebus_queue.auto ("auto") has requires_session = true, but the code sends its messages without a SessionId`}},
		{"the trigger without sessions", func(t *testing.T, f *fixture) {
			f.jobs = replace(t, f.jobs, `"isSessionsEnabled": true`, `"isSessionsEnabled": false`)
		}, []string{`functions/Jobs/function.json has isSessionsEnabled = false`}},
		{"no duplicate detection on the topic", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "requires_duplicate_detection = true\n}", "}")
		}, []string{`azurerm_servicebus_topic.events ("events") must have requires_duplicate_detection = true`}},
		{"a day's MessageIds with a 10-minute window", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `"P1D"`, `"PT10M"`)
		}, []string{`azurerm_servicebus_queue.auto ("auto"): duplicate_detection_history_time_window is PT10M, shorter than the P1D`}},
		{"a lock above 5 minutes", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `lock_duration                           = "PT5M"`, `lock_duration = "PT10M"`)
		}, []string{`azurerm_servicebus_queue.jobs: lock_duration "PT10M" exceeds Service Bus's maximum of PT5M`}},
		{"lock renewal shorter than the function timeout", func(t *testing.T, f *fixture) {
			f.host = replace(t, f.host, `"maxAutoLockRenewalDuration": "12:00:00"`, `"maxAutoLockRenewalDuration": "00:05:00"`)
		}, []string{`host.json: extensions.serviceBus.maxAutoLockRenewalDuration 00:05:00 is shorter than functionTimeout 12:00:00`}},
		{"fewer deliveries than attempts", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `max_delivery_count                      = 10`, `max_delivery_count = 3`)
		}, []string{`max_delivery_count 3 is below the 4 deliveries the code's 3 attempts need`}},
		{"a missing app setting", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "    LOG_LEVEL                                     = var.log_level\n", "")
		}, []string{`does not set LOG_LEVEL, which internal/config/config.go reads`}},
		{"a schedule setting missing", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "    NIGHTLY_SCHEDULE                              = var.nightly_schedule\n", "")
		}, []string{`functions/Nightly/function.json takes its schedule from app setting NIGHTLY_SCHEDULE`}},
		{"a setting renamed in code", func(t *testing.T, f *fixture) {
			f.facts.Settings = replaceAll(f.facts.Settings, "LOG_LEVEL", "LOGLEVEL")
		}, []string{`does not set LOGLEVEL`, `sets app setting LOG_LEVEL, which neither internal/config/config.go nor a binding reads`}},
		{"a secret set", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "    LOG_LEVEL ", "    PG_PASSWORD = var.pg_password\n    LOG_LEVEL ")
		}, []string{`sets PG_PASSWORD: remove it; Entra tokens instead`}},
		{"a connection string for the bindings", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "    ServiceBusConnection__fullyQualifiedNamespace = local.servicebus_fqdn\n", "    ServiceBusConnection = var.sb\n")
		}, []string{`has no app setting ServiceBusConnection__fullyQualifiedNamespace`, `sets app setting ServiceBusConnection, a connection string`}},
		{"a container renamed in infra", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `name               = "snapshots"`, `name               = "archives"`)
		}, []string{`no azurerm_storage_container named "snapshots", the default of SNAPSHOTS_CONTAINER`}},
		{"a table declared in infra", func(t *testing.T, f *fixture) {
			f.hcl += "\nresource \"azurerm_storage_table\" \"snapshots\" {\n  name = \"Snapshots\"\n}\n"
		}, []string{`azurerm_storage_table.snapshots: the handler owns its tables`}},
		{"a too-broad role: Blob Data Owner on the data account", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, `snapshots = { role = "Storage Blob Data Contributor", scope = azurerm_storage_container.snapshots.id }`,
				`snapshots = { role = "Storage Blob Data Owner", scope = azurerm_storage_account.this.id }`)
		}, []string{
			`azurerm_role_assignment.app["snapshots"] gives the service's identity "Storage Blob Data Owner" on azurerm_storage_account.this.id, which is no role the code needs`,
			`gives the service's identity no "Storage Blob Data Contributor" on azurerm_storage_container.snapshots.id`,
		}},
		{"a too-broad role: Service Bus Data Owner on the namespace", func(t *testing.T, f *fixture) {
			f.hcl += "\nresource \"azurerm_role_assignment\" \"servicebus\" {\n  scope = azurerm_servicebus_namespace.this.id\n" +
				"  role_definition_name = \"Azure Service Bus Data Owner\"\n  principal_id = azurerm_user_assigned_identity.app.principal_id\n}\n"
		}, []string{`azurerm_role_assignment.servicebus gives the service's identity "Azure Service Bus Data Owner" on azurerm_servicebus_namespace.this.id`}},
		{"a missing receiver", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "    auto_rx   = { role = \"Azure Service Bus Data Receiver\", scope = azurerm_servicebus_queue.auto.id }\n", "")
		}, []string{`no "Azure Service Bus Data Receiver" on azurerm_servicebus_queue.auto.id`}},
		{"the runtime on the data account", func(t *testing.T, f *fixture) {
			f.hcl = replace(t, f.hcl, "storage_account_name          = azurerm_storage_account.runtime.name", "storage_account_name = azurerm_storage_account.this.name")
		}, []string{`storage_account_name (AzureWebJobsStorage) is azurerm_storage_account.this, the service's data account`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := baseFixture()
			c.edit(t, &f)
			got := f.run(t)
			for _, want := range c.wants {
				found := false
				for _, g := range got {
					found = found || strings.Contains(g, want)
				}
				if !found {
					t.Errorf("no failure contains %q; got:\n%s", want, strings.Join(got, "\n"))
				}
			}
		})
	}
}

func replaceAll(list []string, old, new string) []string {
	out := append([]string(nil), list...)
	for i, s := range out {
		if s == old {
			out[i] = new
		}
	}
	return out
}

func TestISO8601AndTimeSpan(t *testing.T) {
	for s, want := range map[string]time.Duration{"PT10M": 10 * time.Minute, "P1D": 24 * time.Hour, "P7D": 7 * 24 * time.Hour, "PT5M": 5 * time.Minute, "P1DT2H": 26 * time.Hour, "PT30S": 30 * time.Second} {
		if got, ok := iso8601(s); !ok || got != want {
			t.Errorf("iso8601(%q) = %s, %t; want %s", s, got, ok, want)
		}
	}
	for _, s := range []string{"", "P", "PT", "10M", "P1H"} {
		if _, ok := iso8601(s); ok {
			t.Errorf("iso8601(%q) accepted", s)
		}
	}
	for s, want := range map[string]time.Duration{"12:00:00": 12 * time.Hour, "00:05:00": 5 * time.Minute, "1.02:00:00": 26 * time.Hour} {
		if got, ok := timeSpan(s); !ok || got != want {
			t.Errorf("timeSpan(%q) = %s, %t; want %s", s, got, ok, want)
		}
	}
}
