# ---------------------------------------------------------------------------------------------------------
# Where and what
# ---------------------------------------------------------------------------------------------------------

variable "subscription_id" {
  description = "Azure subscription to deploy into. null: ARM_SUBSCRIPTION_ID."
  type        = string
  default     = null
}

variable "name" {
  description = "Short base name of every resource (lowercase letters, digits, dashes). Globally unique names (storage account, Service Bus namespace, function app) get a stable 6-character suffix."
  type        = string
  default     = "mxbackups"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name)) && !endswith(var.name, "-")
    error_message = "name: 2-20 characters, lowercase letters, digits and dashes, starting with a letter, not ending with a dash."
  }
}

variable "location" {
  description = "Azure region of the new resource group and everything in it (ignored when create_resource_group = false: the existing group's region is used)."
  type        = string
  default     = "westeurope"
}

variable "create_resource_group" {
  description = "true: create resource_group_name. false: deploy into the existing group of that name."
  type        = bool
  default     = true
}

variable "resource_group_name" {
  description = "Resource group to create or use. null: rg-<name>."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags on every resource that takes tags."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------------------------------------------------
# Compute
# ---------------------------------------------------------------------------------------------------------

variable "plan_sku" {
  description = "Elastic Premium size. EP1 (1 vCPU, 3.5 GB) is enough for the bounded-memory pipeline; EP2/EP3 give compression and pg_dump more CPU."
  type        = string
  default     = "EP1"

  validation {
    condition     = contains(["EP1", "EP2", "EP3"], var.plan_sku)
    error_message = "plan_sku: one of EP1, EP2, EP3 (Consumption allows only 10 minutes per execution)."
  }
}

variable "maximum_elastic_worker_count" {
  description = "Upper bound of Premium instances the plan scales out to. Each instance runs at most host.json's maxConcurrentSessions (2) jobs at a time."
  type        = number
  default     = 5

  validation {
    condition     = var.maximum_elastic_worker_count >= 1 && var.maximum_elastic_worker_count <= 100
    error_message = "maximum_elastic_worker_count: 1-100."
  }
}

variable "always_ready_instances" {
  description = "Instances kept running at all times (site_config.elastic_instance_minimum): the Premium replacement for Always On, so timers and the first job start without a cold start."
  type        = number
  default     = 1

  validation {
    condition     = var.always_ready_instances >= 1 && var.always_ready_instances <= 20
    error_message = "always_ready_instances: 1-20."
  }
}

variable "container_image" {
  description = "The worker image built from infra/Dockerfile, with an explicit registry host and tag, e.g. myregistry.azurecr.io/mendix-backups:1.0.0. It is pulled with the function app's managed identity."
  type        = string

  validation {
    condition     = can(regex("^[^/]+[.:][^/]*/[^:@]+:[^:/@]+$", var.container_image))
    error_message = "container_image: <registry host>/<repository>:<tag>, e.g. myregistry.azurecr.io/mendix-backups:1.0.0."
  }
}

variable "container_registry_id" {
  description = "Resource id of the Azure Container Registry holding container_image. Set: the managed identity gets AcrPull on it. null: grant AcrPull (or equivalent) yourself."
  type        = string
  default     = null
}

variable "virtual_network_subnet_id" {
  description = "Optional subnet (delegated to Microsoft.Web/serverFarms) for regional VNet integration, needed when the environments' PostgreSQL Flexible Servers or storage accounts are reachable only privately."
  type        = string
  default     = null
}

variable "cors_allowed_origins" {
  description = "Browser origins allowed to call the API directly (e.g. the portal's front end). Empty: no CORS."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------------------------------------
# Storage and messaging
# ---------------------------------------------------------------------------------------------------------

variable "storage_replication_type" {
  description = "Replication of the storage account holding the snapshots (LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS). Archives are the only copy of a backup: prefer zone or geo redundancy."
  type        = string
  default     = "ZRS"

  validation {
    condition     = contains(["LRS", "ZRS", "GRS", "RAGRS", "GZRS", "RAGZRS"], var.storage_replication_type)
    error_message = "storage_replication_type: one of LRS, ZRS, GRS, RAGRS, GZRS, RAGZRS."
  }
}

variable "blob_soft_delete_retention_days" {
  description = "Blob soft delete in days (0: off). Off by default: snapshot expiry is the service's own retention, and soft delete would keep paying for every expired multi-GB archive."
  type        = number
  default     = 0

  validation {
    condition     = var.blob_soft_delete_retention_days >= 0 && var.blob_soft_delete_retention_days <= 365
    error_message = "blob_soft_delete_retention_days: 0 (off) to 365."
  }
}

variable "backup_events_subscriptions" {
  description = "Subscriptions on the backup-events topic, one per consuming service."
  type        = list(string)
  default     = ["portal"]
}

variable "servicebus_local_auth_enabled" {
  description = "Allow SAS keys (connection strings) on the Service Bus namespace. false: Entra ID only; the function app never needs a key."
  type        = bool
  default     = false
}

variable "portal_principal_id" {
  description = "Optional object id of the portal's identity: it gets Azure Service Bus Data Sender on environment-events and Data Receiver on each backup-events subscription."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the Log Analytics workspace behind Application Insights."
  type        = number
  default     = 30
}

# ---------------------------------------------------------------------------------------------------------
# The handler's settings (internal/config/config.go)
# ---------------------------------------------------------------------------------------------------------

variable "auth_issuer_url" {
  description = "AUTH_ISSUER_URL: OIDC issuer of the portal's bearer tokens, e.g. https://login.microsoftonline.com/<tenant id>/v2.0 (Entra ID v2 tokens)."
  type        = string

  validation {
    condition     = startswith(var.auth_issuer_url, "https://")
    error_message = "auth_issuer_url: an https URL, e.g. https://login.microsoftonline.com/<tenant id>/v2.0."
  }
}

variable "auth_audience" {
  description = "AUTH_AUDIENCE: the aud of those tokens: the API app registration's client id for Entra ID v2 tokens (the application ID URI only for v1 tokens)."
  type        = string

  validation {
    condition     = length(var.auth_audience) > 0
    error_message = "auth_audience: must not be empty."
  }
}

variable "console_client_id" {
  description = "CONSOLE_CLIENT_ID: client id of the web console's app registration (an SPA platform with redirect URI https://<function app>.azurewebsites.net/api/console/callback). Empty leaves the console's sign-in off; it then says so."
  type        = string
  default     = ""
}

variable "console_scopes" {
  description = "CONSOLE_SCOPES: what the console asks for at sign-in, space-separated: openid, profile and the API's scope, e.g. \"openid profile api://<API client id>/access_as_user\", so that the access token's audience is auth_audience."
  type        = string
  default     = "openid profile"

  validation {
    condition     = contains(split(" ", var.console_scopes), "openid")
    error_message = "console_scopes: must include openid."
  }
}

variable "console_default_namespace" {
  description = "CONSOLE_DEFAULT_NAMESPACE: the namespace the console opens when its link names none (?namespace=...); empty asks the user."
  type        = string
  default     = ""
}

variable "pg_user" {
  description = "PG_USER: the Entra role name of the managed identity on the environments' PostgreSQL Flexible Servers. null: the identity's name, which is what pgaadauth_create_principal and the Entra admin blade use by default."
  type        = string
  default     = null
}

variable "pg_lock_wait_timeout" {
  description = "PG_LOCK_WAIT_TIMEOUT: how long pg_dump waits for a table lock before the backup fails with a retryable reason (Go duration)."
  type        = string
  default     = "2m"
}

variable "restore_undo_hours" {
  description = "How long a completed restore can be undone: the previous database and the files it overwrote are kept that long (1-720)."
  type        = number
  default     = 24
  validation {
    condition     = var.restore_undo_hours >= 1 && var.restore_undo_hours <= 720
    error_message = "restore_undo_hours must be from 1 to 720."
  }
}

variable "upload_link_hours" {
  description = "UPLOAD_LINK_HOURS: how long a link to upload an archive is valid (1-167); uploads never completed are removed after it."
  type        = number
  default     = 24
  validation {
    condition     = var.upload_link_hours >= 1 && var.upload_link_hours <= 167
    error_message = "upload_link_hours must be from 1 to 167."
  }
}

variable "upload_max_bytes" {
  description = "UPLOAD_MAX_BYTES: the largest archive an upload may be, and the largest entry in it (default 64 GiB)."
  type        = number
  default     = 68719476736
  validation {
    condition     = var.upload_max_bytes >= 1048576
    error_message = "upload_max_bytes must be at least 1 MiB."
  }
}

variable "table_prefix" {
  description = "TABLE_PREFIX: prefix of every table name, to share one account between deployments. Empty: none."
  type        = string
  default     = ""

  validation {
    condition     = var.table_prefix == "" || can(regex("^[A-Za-z][A-Za-z0-9]{0,19}$", var.table_prefix))
    error_message = "table_prefix: letters and digits, starting with a letter, at most 20 characters."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the handler."
  type        = string
  default     = "info"

  validation {
    condition     = contains(["trace", "debug", "info", "warn", "error"], var.log_level)
    error_message = "log_level: one of trace, debug, info, warn, error."
  }
}

variable "extra_app_settings" {
  description = "More app settings (e.g. SHUTDOWN_TIMEOUT). The settings this configuration manages take precedence."
  type        = map(string)
  default     = {}
}

variable "nightly_schedule" {
  description = "NIGHTLY_SCHEDULE: NCRONTAB schedule (UTC) of the nightly timer. Whatever timer fires, the calendar day in schedule_time_zone decides the kind, and a day has one automatic snapshot."
  type        = string
  default     = "0 0 1 * * 1-6"
}

variable "weekly_schedule" {
  description = "WEEKLY_SCHEDULE: NCRONTAB schedule (UTC) of the weekly timer (Sundays other than the first; day-of-month and day-of-week are ANDed)."
  type        = string
  default     = "0 0 1 8-31 * 0"
}

variable "monthly_schedule" {
  description = "MONTHLY_SCHEDULE: NCRONTAB schedule (UTC) of the monthly timer (the first Sunday of the month)."
  type        = string
  default     = "0 0 1 1-7 * 0"
}

variable "schedule_time_zone" {
  description = "SCHEDULE_TIME_ZONE: IANA time zone that decides calendar days, Sundays and the wall clock of expiries (the tz database is in the binary)."
  type        = string
  default     = "UTC"
}

variable "schedule_spread" {
  description = "SCHEDULE_SPREAD: the window (Go duration, 0 to 6h) the day's automatic backups are spread over, so that thousands of dumps do not start in the same minute."
  type        = string
  default     = "2h"
}

variable "keep_last_good_snapshot" {
  description = "KEEP_LAST_GOOD_SNAPSHOT: never expire the newest Finished snapshot of an environment while no newer one exists."
  type        = bool
  default     = true
}
