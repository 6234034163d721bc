output "resource_group_name" {
  value = local.rg_name
}

output "function_app_name" {
  value = azurerm_linux_function_app.this.name
}

output "api_base_url" {
  description = "Base URL of the portal API (docs/api.md)."
  value       = "https://${azurerm_linux_function_app.this.default_hostname}/api/v1"
}

output "console_url" {
  description = "The web console; register <console_url>callback as the SPA redirect URI of console_client_id."
  value       = "https://${azurerm_linux_function_app.this.default_hostname}/api/console/"
}

output "health_url" {
  value = "https://${azurerm_linux_function_app.this.default_hostname}/api/health"
}

output "managed_identity_name" {
  description = "Name of the user-assigned identity: its Entra display name, the role name to create on each PostgreSQL Flexible Server."
  value       = azurerm_user_assigned_identity.app.name
}

output "managed_identity_client_id" {
  value = azurerm_user_assigned_identity.app.client_id
}

output "managed_identity_principal_id" {
  description = "Object id of the identity: the assignee for role assignments on the environments' blob containers and for Entra admin on PostgreSQL."
  value       = azurerm_user_assigned_identity.app.principal_id
}

output "pg_user" {
  description = "PG_USER as configured on the function app."
  value       = local.pg_user
}

output "storage_account_name" {
  description = "The service's data account: snapshots, file stores, uploads, status tables (and the environments' file containers)."
  value       = azurerm_storage_account.this.name
}

output "runtime_storage_account_name" {
  description = "The Functions runtime's own account (AzureWebJobsStorage)."
  value       = azurerm_storage_account.runtime.name
}

output "snapshots_container" {
  value = azurerm_storage_container.snapshots.name
}

output "servicebus_namespace" {
  description = "Fully qualified Service Bus namespace (senders of environment events need it)."
  value       = local.servicebus_fqdn
}

output "servicebus_entities" {
  value = {
    jobs_queue               = azurerm_servicebus_queue.backup_jobs.name
    environment_events_queue = azurerm_servicebus_queue.environment_events.name
    automatic_backups_queue  = azurerm_servicebus_queue.automatic_backups.name
    backup_events_topic      = azurerm_servicebus_topic.backup_events.name
    backup_events_subscriptions = [
      for s in azurerm_servicebus_subscription.backup_events : s.name
    ]
  }
}

output "application_insights_connection_string" {
  value     = azurerm_application_insights.this.connection_string
  sensitive = true
}
