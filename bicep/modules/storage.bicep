// The backup storage account: StorageV2, HTTPS only, TLS 1.2, no public blob access,
// shared-key access off by default (Entra ID only), blob versioning, change feed,
// blob and container soft delete, one private backup container, optional container
// immutability (time-based retention), optional queue for hand-offs, and optional
// resource logs to Log Analytics.
//
// Used twice by main.bicep: for the primary account and, with object replication
// enabled, for the disaster-recovery account in another region (same settings).

@description('Storage account name (3-24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the storage account.')
param location string

@description('Tags applied to the storage account.')
param tags object = {}

@description('Replication SKU. Archive tier needs LRS, GRS or RA-GRS (not ZRS/GZRS).')
@allowed([
  'Standard_LRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Allow Shared Key (account key / account SAS) authorization. Off: Entra ID only.')
param allowSharedKeyAccess bool = false

@description('Second layer of encryption at rest (infrastructure encryption). Can only be set when the account is created.')
param requireInfrastructureEncryption bool = false

@description('Network rules (networkAcls) of the account: defaultAction, bypass, ipRules, virtualNetworkRules.')
param networkAcls object = {
  defaultAction: 'Deny'
  bypass: 'AzureServices'
  ipRules: []
  virtualNetworkRules: []
}

@description('Name of the private backup container.')
@minLength(3)
@maxLength(63)
param containerName string = 'backups'

@description('Days a deleted or overwritten blob stays recoverable (blob soft delete).')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 14

@description('Days a deleted container stays recoverable (container soft delete).')
@minValue(1)
@maxValue(365)
param containerSoftDeleteDays int = 14

@description('Days the change feed (audit trail of blob changes) is kept.')
@minValue(1)
@maxValue(146000)
param changeFeedRetentionDays int = 365

@description('Time-based retention (WORM) on the backup container in days since blob creation; 0 disables it. Left unlocked: lock it by hand once tested, locking is irreversible.')
@minValue(0)
@maxValue(146000)
param immutabilityDays int = 0

@description('Version-level immutability support on the backup container: lets blobpipe\'s [immutability] table put a time-based retention policy (and legal hold) on each snapshot\'s own blobs after commit. Needs blob versioning (enabled below). Cannot be combined with a container-level policy (immutabilityDays > 0).')
param enableVersionLevelImmutability bool = false

@description('Create the queue service queue used for run hand-offs (Functions to Container Apps job).')
param enableQueue bool = false

@description('Name of the hand-off queue (only when enableQueue is true).')
param queueName string = 'blobpipe-runs'

@description('Resource id of a Log Analytics workspace for blob/queue resource logs; empty disables diagnostics.')
param logAnalyticsWorkspaceId string = ''

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: reached through VNet service endpoints behind a firewall with defaultAction Deny (CKV_AZURE_35 still enforced); 'Disabled' needs private endpoints + private DNS, not part of this template
  // checkov:skip=CKV_AZURE_43: the name is a parameter (main.bicep builds it with take(toLower(prefix + uniqueString()), 24)); checkov judges the parameter identifier, not the value; scripts/bicep_policies.py checks namePrefix instead
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: allowSharedKeyAccess
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    isHnsEnabled: false
    isSftpEnabled: false
    isLocalUserEnabled: false
    publicNetworkAccess: 'Enabled'
    networkAcls: networkAcls
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: requireInfrastructureEncryption
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    isVersioningEnabled: true
    changeFeed: {
      enabled: true
      retentionInDays: changeFeedRetentionDays
    }
    deleteRetentionPolicy: {
      enabled: true
      days: blobSoftDeleteDays
      allowPermanentDelete: false
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: containerSoftDeleteDays
    }
  }
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: containerName
  properties: {
    publicAccess: 'None'
    immutableStorageWithVersioning: {
      enabled: enableVersionLevelImmutability
    }
  }
}

resource immutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (immutabilityDays > 0) {
  parent: container
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: immutabilityDays
    allowProtectedAppendWrites: false
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = if (enableQueue) {
  parent: account
  name: 'default'
}

resource queue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = if (enableQueue) {
  parent: queueService
  name: queueName
}

resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'blobpipe-blob-logs'
  scope: blobService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'Transaction'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (enableQueue && !empty(logAnalyticsWorkspaceId)) {
  name: 'blobpipe-queue-logs'
  scope: queueService
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

@description('Resource id of the storage account.')
output id string = account.id

@description('Name of the storage account.')
output name string = account.name

@description('Blob endpoint, e.g. https://<account>.blob.core.windows.net/.')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('Queue endpoint (meaningful only when enableQueue is true).')
output queueEndpoint string = account.properties.primaryEndpoints.queue

@description('Name of the backup container.')
output containerName string = container.name
