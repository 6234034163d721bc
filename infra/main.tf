# Azure deployment of the Mendix backups service: a Go custom handler in a custom Linux container on an
# Elastic Premium plan, with Table/Blob Storage, Service Bus and Application Insights, all reached with one
# user-assigned managed identity. No secret (storage key, SAS key, database password) is stored anywhere:
# the storage account refuses shared keys, Service Bus refuses SAS by default, and PostgreSQL is reached
# with Entra ID tokens of the same identity.

data "azurerm_client_config" "current" {}

locals {
  resource_group_name = coalesce(var.resource_group_name, "rg-${var.name}")

  # Stable per subscription/group/name, so re-applies keep the names and two deployments don't collide.
  suffix     = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${local.resource_group_name}/${var.name}"), 0, 6)
  name_alnum = replace(var.name, "-", "")

  storage_account_name         = "${substr(local.name_alnum, 0, 16)}st${local.suffix}" # <= 24, lowercase alphanumeric
  runtime_storage_account_name = "${substr(local.name_alnum, 0, 16)}fn${local.suffix}" # the Functions runtime's
  servicebus_name              = "${var.name}-sb-${local.suffix}"
  function_app_name            = "${var.name}-${local.suffix}" # <= 32 characters: no host ID truncation collisions

  rg_name  = var.create_resource_group ? azurerm_resource_group.this[0].name : data.azurerm_resource_group.existing[0].name
  location = var.create_resource_group ? azurerm_resource_group.this[0].location : data.azurerm_resource_group.existing[0].location

  # myregistry.azurecr.io/mendix-backups:1.0.0 -> registry, name, tag (the form the docker block wants).
  image = regex("^(?P<registry>[^/]+)/(?P<name>[^:@]+):(?P<tag>[^:/@]+)$", var.container_image)

  # "https://<ns>.servicebus.windows.net:443/" -> "<ns>.servicebus.windows.net" (right in every cloud).
  servicebus_fqdn = regex("^https?://([^:/]+)", azurerm_servicebus_namespace.this.endpoint)[0]

  pg_user = coalesce(var.pg_user, azurerm_user_assigned_identity.app.name)
}

resource "azurerm_resource_group" "this" {
  count    = var.create_resource_group ? 1 : 0
  name     = local.resource_group_name
  location = var.location
  tags     = var.tags
}

data "azurerm_resource_group" "existing" {
  count = var.create_resource_group ? 0 : 1
  name  = local.resource_group_name
}

# ---------------------------------------------------------------------------------------------------------
# Identity
# ---------------------------------------------------------------------------------------------------------

# User-assigned rather than system-assigned: it exists before the function app, so its role assignments
# (AcrPull above all: the image is pulled before the host can start) are in place when the app is
# created, and its name/object id are known for the PostgreSQL grants before the first deployment.
resource "azurerm_user_assigned_identity" "app" {
  name                = "id-${var.name}"
  resource_group_name = local.rg_name
  location            = local.location
  tags                = var.tags
}

# ---------------------------------------------------------------------------------------------------------
# Storage: the service's status tables and snapshot archives in one account ("this"), the Functions
# runtime's own state (AzureWebJobsStorage) in another ("runtime").
# ---------------------------------------------------------------------------------------------------------

resource "azurerm_storage_account" "this" {
  name                     = local.storage_account_name
  resource_group_name      = local.rg_name
  location                 = local.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = var.storage_replication_type

  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  # No shared key at all. Download/upload links are user-delegation SAS (signed with an Entra-issued
  # key), which work with shared keys off; account-key SAS would not.
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true

  blob_properties {
    # Versioning off: every archive is written once and never overwritten, versions would only keep
    # expired archives alive.
    versioning_enabled = false

    dynamic "delete_retention_policy" {
      for_each = var.blob_soft_delete_retention_days > 0 ? [1] : []
      content {
        days = var.blob_soft_delete_retention_days
      }
    }

    # Cheap insurance against deleting a whole container.
    container_delete_retention_policy {
      days = 7
    }

    # The web console (/api/console/) uploads archives from the browser straight to an upload link
    # (Put Block, Put Block List), so the blob service must allow the app's origin. Only PUT: downloads
    # are plain navigations, which CORS does not govern. The hostname is computed, not read from the
    # function app, which depends on this account.
    cors_rule {
      allowed_origins    = ["https://${local.function_app_name}.azurewebsites.net"]
      allowed_methods    = ["PUT", "OPTIONS"]
      allowed_headers    = ["content-type", "x-ms-blob-type", "x-ms-blob-content-type", "x-ms-version", "x-ms-date", "x-ms-client-request-id"]
      exposed_headers    = ["etag", "x-ms-request-id", "x-ms-error-code"]
      max_age_in_seconds = 600
    }
  }

  # No lifecycle management policy on purpose:
  # - A backup interrupted before its block list is committed leaves only uncommitted blocks. A lifecycle
  #   rule cannot target those (rules act on committed blobs); Azure garbage-collects uncommitted blocks
  #   by itself after 7 days, and they are never visible as a blob.
  # - Expiry of snapshots is the service's own retention (it deletes the blob and the record together).

  tags = var.tags
}

# The status tables (Environments, Snapshots, Operations, ...) are not declared here: the handler owns
# them. It creates every table it uses at start (tablestore.EnsureTables), with the optional TABLE_PREFIX,
# so a table added in code needs no infrastructure change; "Storage Table Data Contributor" on this
# account lets it. infra/consistency_test.go fails if a table resource appears here.

# The Functions runtime's own state: function keys and host secrets, the timers' schedule monitor, the
# host's singleton/primary-host leases (azure-webjobs-hosts, azure-webjobs-secrets) and whatever queues
# and tables the host decides to use. The host needs broad rights on its storage: it creates its
# containers itself, so Microsoft documents "Storage Blob Data Owner" on the account (plus queue and
# table roles for the features that use them). Those rights must not reach the archives and status
# tables, so the runtime gets an account of its own and its broad roles stop there. Scoping the runtime's
# roles to its containers in the data account instead would not work: the containers do not exist
# before the host creates them, and which ones it uses is the host's business, not ours.
resource "azurerm_storage_account" "runtime" {
  name                     = local.runtime_storage_account_name
  resource_group_name      = local.rg_name
  location                 = local.location
  account_kind             = "StorageV2"
  account_tier             = "Standard"
  account_replication_type = "LRS" # state the host recreates; nothing to keep across a region loss

  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  allow_nested_items_to_be_public = false
  # No shared key, not even for the Functions runtime: AzureWebJobsStorage is identity-based
  # (AzureWebJobsStorage__accountName/__credential/__clientId) and the app needs no Azure Files content
  # share, because its code is baked into the container image (WEBSITES_ENABLE_APP_SERVICE_STORAGE=false,
  # content_share_force_disabled). Azure Files is the only part of the runtime that would need a key.
  shared_access_key_enabled       = false
  default_to_oauth_authentication = true

  # No lifecycle management policy: Microsoft advises against lifecycle rules on the account the
  # Functions runtime uses (function keys and timer state live in azure-webjobs-* containers).

  tags = var.tags
}

resource "azurerm_storage_container" "snapshots" {
  name                  = "snapshots"
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

# The environments' file stores: file documents stored once and shared by an environment's snapshots
# (docs/snapshot-layout.md). A container of its own, so that the daily sweep of "snapshots" never pages
# through the store objects.
resource "azurerm_storage_container" "snapshot_files" {
  name                  = "snapshot-files"
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

# Archives users upload (through a write-only link) until their validation job has read them. Never
# public: the links are user-delegation SAS on one blob each.
resource "azurerm_storage_container" "snapshot_uploads" {
  name                  = "snapshot-uploads"
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"
}

# ---------------------------------------------------------------------------------------------------------
# Service Bus (Standard: the cheapest tier with sessions, duplicate detection and topics)
# ---------------------------------------------------------------------------------------------------------

resource "azurerm_servicebus_namespace" "this" {
  name                = local.servicebus_name
  resource_group_name = local.rg_name
  location            = local.location
  sku                 = "Standard"
  minimum_tls_version = "1.2"
  local_auth_enabled  = var.servicebus_local_auth_enabled
  tags                = var.tags
}

# The long work: dumps, restores, upload validation, download preparation.
resource "azurerm_servicebus_queue" "backup_jobs" {
  name         = "backup-jobs"
  namespace_id = azurerm_servicebus_namespace.this.id

  # Sessions: the sender sets SessionId = environment id, so one environment's jobs run one at a time and
  # in order (a restore never overlaps a backup of the same database), while different environments run
  # in parallel (host.json maxConcurrentSessions per instance). Cannot be changed after creation.
  requires_session = true

  # Duplicate detection: MessageId = operation id, so a send retried after a timeout, or the recovery
  # timer re-sending a message that was in fact delivered, does not start the same job twice within the
  # window. The handler is idempotent anyway (an ETag claim on the operation); this saves a wasted start.
  # Cannot be changed after creation.
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "PT10M"

  # 5 minutes is the maximum lock; the Functions host renews the session lock for up to host.json's
  # maxAutoLockRenewalDuration (12 h, equal to functionTimeout), so hour-long dumps keep their message.
  lock_duration = "PT5M"

  # The handler answers non-2xx only for transient failures; after 10 deliveries the message is
  # dead-lettered and the RecoverOperations timer fails or re-sends the operation.
  max_delivery_count = 10

  # A job not even started within a week is stale: it goes to the dead-letter queue for inspection, and
  # the recovery timer deals with its operation record.
  default_message_ttl                  = "P7D"
  dead_lettering_on_message_expiration = true
}

# Inbound events from the platform: environment.updated, environment.deleted, namespace.permissions.
resource "azurerm_servicebus_queue" "environment_events" {
  name         = "environment-events"
  namespace_id = azurerm_servicebus_namespace.this.id

  # MessageId = event_id: a sender's retry is dropped here; the handler also ignores events older than
  # what it stored, so out-of-order and late duplicates are harmless too.
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "PT10M"

  max_delivery_count                   = 10
  dead_lettering_on_message_expiration = true
}

# Automatic backups: the timers' fan-out sends one message per environment and day (a try), scheduled
# inside SCHEDULE_SPREAD; a try that cannot run schedules the next one. Handling a message only starts a
# job on backup-jobs, so no sessions: thousands are handled in parallel.
resource "azurerm_servicebus_queue" "automatic_backups" {
  name         = "automatic-backups"
  namespace_id = azurerm_servicebus_namespace.this.id

  # MessageId = "<environment>/<day>[/<try>]": a timer firing twice, overlapping schedules or a resumed
  # fan-out send the same ids, dropped here for the whole day. The handler is idempotent anyway: a try's
  # snapshot id is derived from the environment, the day and the try.
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "P1D"

  lock_duration      = "PT1M" # a try takes seconds: it only starts a job
  max_delivery_count = 10

  # A try not delivered within a day is for a day gone by: dead-lettered (the handler would drop it too).
  default_message_ttl                  = "P1D"
  dead_lettering_on_message_expiration = true
}

# Outbound events: snapshot.finished|failed|expired, restore.finished|failed.
resource "azurerm_servicebus_topic" "backup_events" {
  name         = "backup-events"
  namespace_id = azurerm_servicebus_namespace.this.id

  # MessageId = event_id: a publish retried by the SDK after a lost acknowledgement is delivered once.
  requires_duplicate_detection            = true
  duplicate_detection_history_time_window = "PT10M"
}

resource "azurerm_servicebus_subscription" "backup_events" {
  for_each = toset(var.backup_events_subscriptions)

  name                                 = each.value
  topic_id                             = azurerm_servicebus_topic.backup_events.id
  max_delivery_count                   = 10
  lock_duration                        = "PT1M"
  default_message_ttl                  = "P14D" # a consumer that is away for two weeks finds them dead-lettered
  dead_lettering_on_message_expiration = true
}

# ---------------------------------------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------------------------------------

resource "azurerm_log_analytics_workspace" "this" {
  name                = "log-${var.name}"
  resource_group_name = local.rg_name
  location            = local.location
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = var.tags
}

resource "azurerm_application_insights" "this" {
  name                = "appi-${var.name}"
  resource_group_name = local.rg_name
  location            = local.location
  workspace_id        = azurerm_log_analytics_workspace.this.id
  application_type    = "web"
  tags                = var.tags
}

# ---------------------------------------------------------------------------------------------------------
# Hosting
# ---------------------------------------------------------------------------------------------------------

# Elastic Premium, not Consumption: Consumption stops every execution after 10 minutes, and a pg_dump of
# a production database (or a restore) takes far longer. Premium allows an unbounded functionTimeout
# (host.json: 12 h), runs custom Linux containers (the only way to get pg_dump 15 onto the worker) and
# scales on Service Bus queue length. It may still stop an instance on scale-in after a 60-minute grace
# period, which is why jobs are idempotent and restartable (leases + the RecoverOperations timer).
resource "azurerm_service_plan" "this" {
  name                         = "plan-${var.name}"
  resource_group_name          = local.rg_name
  location                     = local.location
  os_type                      = "Linux"
  sku_name                     = var.plan_sku
  maximum_elastic_worker_count = var.maximum_elastic_worker_count
  tags                         = var.tags
}

# A custom container, because the worker runs pg_dump/pg_restore: those of PostgreSQL 15 for servers up
# to 15 (archive version 1.14, which Mendix Cloud accepts), those of 17 for servers 16 and 17 (PG_BIN_DIRS).
# The stock Functions images have no PostgreSQL client at all. The image (infra/Dockerfile) is the
# Functions base image + postgresql-client-15 and -17 + the `make package` output in /home/site/wwwroot.
resource "azurerm_linux_function_app" "this" {
  name                = local.function_app_name
  resource_group_name = local.rg_name
  location            = local.location
  service_plan_id     = azurerm_service_plan.this.id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  # Identity-based AzureWebJobsStorage. The provider writes AzureWebJobsStorage__accountName itself from
  # these two arguments (and would fight a copy of it in app_settings); __credential and __clientId, which
  # select the user-assigned identity, are in app_settings below.
  storage_account_name          = azurerm_storage_account.runtime.name
  storage_uses_managed_identity = true
  # No Azure Files content share (it needs a storage key; the code is in the image).
  content_share_force_disabled = true
  # No AzureWebJobsDashboard (obsolete; Application Insights instead).
  builtin_logging_enabled = false

  functions_extension_version   = "~4"
  https_only                    = true
  public_network_access_enabled = true
  virtual_network_subnet_id     = var.virtual_network_subnet_id

  # The image is the deployment: no FTP, no zip/web deploy with basic credentials.
  ftp_publish_basic_authentication_enabled       = false
  webdeploy_publish_basic_authentication_enabled = false

  site_config {
    # always_on is a Dedicated-plan setting: Azure rejects it on Elastic Premium. The Premium equivalent
    # is always-ready instances, so timers fire and the first job starts without a cold start.
    always_on                = false
    elastic_instance_minimum = var.always_ready_instances

    ftps_state              = "Disabled"
    minimum_tls_version     = "1.2"
    scm_minimum_tls_version = "1.2"
    http2_enabled           = true

    # The provider owns APPLICATIONINSIGHTS_CONNECTION_STRING through this argument (a copy in app_settings
    # would show a diff on every plan).
    application_insights_connection_string = azurerm_application_insights.this.connection_string

    # GET /api/health (anonymous) answers 503 when a dependency check fails; an instance that stays
    # unhealthy for 10 minutes is replaced.
    health_check_path                 = "/api/health"
    health_check_eviction_time_in_min = 10

    # Pull the image with the user-assigned identity (AcrPull below): no registry password.
    container_registry_use_managed_identity       = true
    container_registry_managed_identity_client_id = azurerm_user_assigned_identity.app.client_id

    application_stack {
      docker {
        registry_url = "https://${local.image.registry}"
        image_name   = local.image.name
        image_tag    = local.image.tag
      }
    }

    dynamic "cors" {
      for_each = length(var.cors_allowed_origins) > 0 ? [1] : []
      content {
        allowed_origins = var.cors_allowed_origins
      }
    }
  }

  # Every setting the handler reads is documented in internal/config/config.go. Deliberately absent:
  # STORAGE_CONNECTION_STRING, SERVICEBUS_CONNECTION_STRING, PG_PASSWORD (the handler then uses the
  # managed identity: account URLs, the namespace, and Entra tokens as the PostgreSQL password).
  app_settings = merge(
    var.extra_app_settings,
    var.table_prefix == "" ? {} : { TABLE_PREFIX = var.table_prefix },
    {
      FUNCTIONS_WORKER_RUNTIME = "custom"
      # The code is in the image; don't mount /home from Azure Files over it.
      WEBSITES_ENABLE_APP_SERVICE_STORAGE = "false"

      # Functions runtime storage (accountName is set by the provider, see above).
      AzureWebJobsStorage__credential = "managedidentity"
      AzureWebJobsStorage__clientId   = azurerm_user_assigned_identity.app.client_id

      # The "connection" of the Service Bus triggers (function.json: "connection": "ServiceBusConnection").
      ServiceBusConnection__fullyQualifiedNamespace = local.servicebus_fqdn
      ServiceBusConnection__credential              = "managedidentity"
      ServiceBusConnection__clientId                = azurerm_user_assigned_identity.app.client_id

      # The handler itself.
      STORAGE_BLOB_URL     = trimsuffix(azurerm_storage_account.this.primary_blob_endpoint, "/")
      STORAGE_TABLE_URL    = trimsuffix(azurerm_storage_account.this.primary_table_endpoint, "/")
      SNAPSHOTS_CONTAINER  = azurerm_storage_container.snapshots.name
      FILE_STORE_CONTAINER = azurerm_storage_container.snapshot_files.name
      UPLOADS_CONTAINER    = azurerm_storage_container.snapshot_uploads.name
      SERVICEBUS_NAMESPACE = local.servicebus_fqdn
      AZURE_CLIENT_ID      = azurerm_user_assigned_identity.app.client_id
      AUTH_ISSUER_URL      = var.auth_issuer_url
      AUTH_AUDIENCE        = var.auth_audience
      PG_USER              = local.pg_user
      PG_SSLMODE           = "verify-full" # with PG_SSLROOTCERT, the Azure root CAs in the image (Dockerfile)
      PG_BIN_DIRS          = "15=/usr/lib/postgresql/15/bin,17=/usr/lib/postgresql/17/bin"
      PG_LOCK_WAIT_TIMEOUT = var.pg_lock_wait_timeout
      RESTORE_UNDO_HOURS   = tostring(var.restore_undo_hours)
      UPLOAD_LINK_HOURS    = tostring(var.upload_link_hours)
      UPLOAD_MAX_BYTES     = tostring(var.upload_max_bytes)
      LOG_LEVEL            = var.log_level

      # The web console's sign-in: its SPA client at the issuer (docs/deploy.md, "The web console").
      CONSOLE_CLIENT_ID         = var.console_client_id
      CONSOLE_SCOPES            = var.console_scopes
      CONSOLE_DEFAULT_NAMESPACE = var.console_default_namespace

      # Automatic backups. The host reads the three schedules (function.json: "%NIGHTLY_SCHEDULE%"), in
      # UTC; the handler reads them too, to show each environment's next automatic backup.
      NIGHTLY_SCHEDULE        = var.nightly_schedule
      WEEKLY_SCHEDULE         = var.weekly_schedule
      MONTHLY_SCHEDULE        = var.monthly_schedule
      SCHEDULE_TIME_ZONE      = var.schedule_time_zone
      SCHEDULE_SPREAD         = var.schedule_spread
      KEEP_LAST_GOOD_SNAPSHOT = tostring(var.keep_last_good_snapshot)
    },
  )

  tags = var.tags

  # The host needs its storage and Service Bus roles, and the platform needs AcrPull, on first start.
  depends_on = [
    azurerm_role_assignment.runtime,
    azurerm_role_assignment.app,
    azurerm_role_assignment.acr_pull,
  ]
}

# ---------------------------------------------------------------------------------------------------------
# Role assignments of the managed identity
# ---------------------------------------------------------------------------------------------------------

# Least privilege: each role on the narrowest scope the code needs, no Owner role on the service's data,
# nothing at namespace, resource-group or subscription scope. infra/consistency_test.go checks this list
# against the queues, topic and containers the code uses, and fails on a role or scope not listed there.
locals {
  app_roles = {
    # The containers the service writes: archives, dumps and manifests; the file stores; the uploads it
    # validates and deletes. Contributor = read, write, delete, list blobs of that container only.
    snapshots_blobs      = { role = "Storage Blob Data Contributor", scope = azurerm_storage_container.snapshots.id }
    snapshot_files_blobs = { role = "Storage Blob Data Contributor", scope = azurerm_storage_container.snapshot_files.id }
    uploads_blobs        = { role = "Storage Blob Data Contributor", scope = azurerm_storage_container.snapshot_uploads.id }
    # A user-delegation key (internal/blobstore/links.go: download (r) and upload (cw) links;
    # sourceauth.go: the source SAS of an asynchronous copy) is asked of the blob service as a whole,
    # so this role is on the account. The key itself grants nothing: a user-delegation SAS is honoured
    # only for what its signer holds at the time of use, so the Contributor roles above (which include r,
    # c and w on those containers) are what makes the download and upload links work, and a link can
    # never reach a container the identity has no role on.
    blob_delegator = { role = "Storage Blob Delegator", scope = azurerm_storage_account.this.id }
    # The status tables, which the handler creates at start (EnsureTables; their names depend on
    # TABLE_PREFIX): table scope is impossible before they exist, so the account.
    data_tables = { role = "Storage Table Data Contributor", scope = azurerm_storage_account.this.id }

    # Service Bus, per entity. Receiver on the queues the triggers read (function.json) and the health
    # check peeks (environment-events, internal/bus/servicebus.go Ping; peek is a receive right).
    backup_jobs_receive        = { role = "Azure Service Bus Data Receiver", scope = azurerm_servicebus_queue.backup_jobs.id }
    automatic_backups_receive  = { role = "Azure Service Bus Data Receiver", scope = azurerm_servicebus_queue.automatic_backups.id }
    environment_events_receive = { role = "Azure Service Bus Data Receiver", scope = azurerm_servicebus_queue.environment_events.id }
    # Sender on what the service publishes to (scheduled messages are sends too): jobs (API and
    # recovery), automatic-backup tries (the fan-out and the next try), outcome events.
    backup_jobs_send       = { role = "Azure Service Bus Data Sender", scope = azurerm_servicebus_queue.backup_jobs.id }
    automatic_backups_send = { role = "Azure Service Bus Data Sender", scope = azurerm_servicebus_queue.automatic_backups.id }
    backup_events_send     = { role = "Azure Service Bus Data Sender", scope = azurerm_servicebus_topic.backup_events.id }
  }

  # The Functions runtime's account only (see azurerm_storage_account.runtime): Blob Data Owner is what
  # Microsoft documents for identity-based AzureWebJobsStorage (the host creates its containers and
  # manages blob leases); queues and tables for the host features that use them.
  runtime_roles = {
    blob  = "Storage Blob Data Owner"
    queue = "Storage Queue Data Contributor"
    table = "Storage Table Data Contributor"
  }
}

# Environments' own file containers are not created here, so neither are their roles: the operator
# assigns the identity Storage Blob Data Reader (backups) or Contributor (restore targets) on each of
# them (infra/README.md, "Environments' files"). The code names an environment's container without an
# account (environment.updated "files.container"), so those containers are in the account of
# STORAGE_BLOB_URL, azurerm_storage_account.this; the Blob Delegator role above covers the copy SAS
# for them too, and grants no read by itself.
resource "azurerm_role_assignment" "app" {
  for_each = local.app_roles

  scope                = each.value.scope
  role_definition_name = each.value.role
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_role_assignment" "runtime" {
  for_each = local.runtime_roles

  scope                = azurerm_storage_account.runtime.id
  role_definition_name = each.value
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

# The one assignment whose role and scope did not change keeps its identity across the rename.
moved {
  from = azurerm_role_assignment.storage["table"]
  to   = azurerm_role_assignment.app["data_tables"]
}

resource "azurerm_role_assignment" "acr_pull" {
  count = var.container_registry_id == null ? 0 : 1

  scope                = var.container_registry_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
  principal_type       = "ServicePrincipal"
}

# Optional: the portal sends environment events and reads backup events with its own Entra identity.
resource "azurerm_role_assignment" "portal_sender" {
  count = var.portal_principal_id == null ? 0 : 1

  scope                = azurerm_servicebus_queue.environment_events.id
  role_definition_name = "Azure Service Bus Data Sender"
  principal_id         = var.portal_principal_id
}

resource "azurerm_role_assignment" "portal_receiver" {
  for_each = var.portal_principal_id == null ? toset([]) : toset(var.backup_events_subscriptions)

  scope                = azurerm_servicebus_subscription.backup_events[each.key].id
  role_definition_name = "Azure Service Bus Data Receiver"
  principal_id         = var.portal_principal_id
}
