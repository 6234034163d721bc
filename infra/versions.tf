terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source = "hashicorp/azurerm"
      # 4.9 is the first 4.x release with `storage_account_id` on azurerm_storage_container and the
      # `storage.data_plane_available` feature used below.
      version = "~> 4.9"
    }
  }
}

provider "azurerm" {
  # null: taken from ARM_SUBSCRIPTION_ID (azurerm 4.x requires one or the other).
  subscription_id = var.subscription_id

  # The storage account has shared-key access disabled. Terraform manages it and the snapshots container
  # through Azure Resource Manager only (data_plane_available = false, containers by storage_account_id),
  # and should it ever need the data plane it authenticates with Entra ID, never with an account key.
  storage_use_azuread = true

  features {
    storage {
      data_plane_available = false
    }
  }
}
