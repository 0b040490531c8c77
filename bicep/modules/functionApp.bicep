// Alternative runtime: the blobpipe binary as an Azure Functions custom handler
// (`blobpipe serve`), Linux, on a Dedicated (App Service) plan.
//
// Why Dedicated: Consumption and Elastic Premium keep the app content on an Azure
// Files share whose setting (WEBSITE_CONTENTAZUREFILECONNECTIONSTRING) needs an account
// key; a Dedicated plan has no content share, so the whole app runs without any
// connection string or key: host storage is reached with the user-assigned identity
// (AzureWebJobsStorage__accountName + __credential + __clientId) and the package is
// read from blob storage with the same identity.
//
// The Functions host keeps its own state (timer leases, keys) in a SEPARATE small
// host storage account, so the host's broader role (Storage Blob Data Owner) never
// touches the backup account.

@description('Name of the Function App (globally unique host name).')
param name string

@description('Azure region of the plan, the app and its host storage account.')
param location string

@description('Tags applied to every resource of the Function App deployment.')
param tags object = {}

@description('Name of the host storage account used by the Functions runtime (not the backup account).')
@minLength(3)
@maxLength(24)
param hostStorageAccountName string

@description('Dedicated App Service plan SKU (Linux), e.g. B1, P0v3, P1v3.')
param planSku string = 'P0v3'

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Principal id of the user-assigned identity (gets data roles on the host storage account).')
param identityPrincipalId string

@description('URL of the zip package (blobpipe binary + host.json + function folders) in blob storage, read with the identity; empty to deploy the package later.')
param packageUrl string = ''

@description('Blob endpoint of the backup account, exported as BLOBPIPE_STORAGE_URL.')
param storageBlobEndpoint string

@description('Backup container name, exported as BLOBPIPE_CONTAINER.')
param containerName string

@description('Resource id of a subnet delegated to Microsoft.Web/serverFarms for outbound VNet integration; empty = none.')
param virtualNetworkSubnetId string = ''

@description('Network rules (networkAcls) of the host storage account; main.bicep adds the Functions integration subnet.')
param hostStorageNetworkAcls object = {
  defaultAction: 'Deny'
  bypass: 'AzureServices'
  ipRules: []
  virtualNetworkRules: []
}

@description('Inbound public network access to the app. Disabled by default: timer triggers need no inbound traffic; enable it (HTTP triggers are protected by function keys) or add a private endpoint to call the HTTP triggers.')
@allowed([
  'Enabled'
  'Disabled'
])
param publicNetworkAccess string = 'Disabled'

@description('Resource id of the Log Analytics workspace for FunctionAppLogs; empty disables diagnostics.')
param logAnalyticsWorkspaceId string = ''

@description('Extra app settings: array of {name, value} (non-secret values only).')
param extraAppSettings array = []

@description('Hand-off queue URL (https://<account>.queue.core.windows.net/<queue>), exported as BLOBPIPE_HANDOFF_QUEUE for pipelines with queue_url = "${BLOBPIPE_HANDOFF_QUEUE}"; empty: none.')
param handoffQueueUrl string = ''

var storageBlobDataOwnerRoleId = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'

var baseAppSettings = [
  {
    name: 'FUNCTIONS_EXTENSION_VERSION'
    value: '~4'
  }
  {
    name: 'FUNCTIONS_WORKER_RUNTIME'
    value: 'custom'
  }
  {
    name: 'AzureWebJobsStorage__accountName'
    value: hostStorage.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'BLOBPIPE_STORAGE_URL'
    value: storageBlobEndpoint
  }
  {
    name: 'BLOBPIPE_CONTAINER'
    value: containerName
  }
]

var handoffAppSettings = empty(handoffQueueUrl) ? [] : [
  {
    name: 'BLOBPIPE_HANDOFF_QUEUE'
    value: handoffQueueUrl
  }
]

var packageAppSettings = empty(packageUrl) ? [] : [
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE'
    value: packageUrl
  }
  {
    name: 'WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID'
    value: identityId
  }
]

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59: reached through the Functions subnet service endpoint behind a firewall with defaultAction Deny (CKV_AZURE_35 still enforced); 'Disabled' needs private endpoints + private DNS
  // checkov:skip=CKV_AZURE_43: the name is a parameter built in main.bicep with take(toLower(prefix + uniqueString()), 24); checkov judges the parameter identifier, not the value
  name: hostStorageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_GRS'
  }
  properties: {
    accessTier: 'Hot'
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    isLocalUserEnabled: false
    publicNetworkAccess: 'Enabled'
    networkAcls: hostStorageNetworkAcls
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    isVersioningEnabled: true
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource packageContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: 'app-package'
  properties: {
    publicAccess: 'None'
  }
}

resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identityPrincipalId, storageBlobDataOwnerRoleId)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwnerRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host state (AzureWebJobsStorage) and the app package'
  }
}

resource hostQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identityPrincipalId, storageQueueDataContributorRoleId)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Functions host queues (AzureWebJobsStorage)'
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: one small instance runs scheduled backups; zone redundancy needs 3+ instances. A missed run is caught by blobpipe check (freshness) and the data itself lives in geo-redundant storage
  name: '${name}-plan'
  location: location
  tags: tags
  kind: 'linux'
  sku: {
    name: planSku
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17: inbound mTLS would break the callers of the HTTP triggers (function keys + publicNetworkAccess Disabled by default); timer triggers have no inbound caller
  // checkov:skip=CKV_AZURE_212: single instance by design (backup scheduler, runs serialized by the blob lease); failover is not worth a second always-on instance, missed runs are alerted by blobpipe check
  // checkov:skip=CKV_AZURE_213: App Service health check only acts with 2+ instances; blobpipe reports its own health through run records and freshness checks
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: publicNetworkAccess
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      alwaysOn: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      vnetRouteAllEnabled: !empty(virtualNetworkSubnetId)
      remoteDebuggingEnabled: false
      appSettings: concat(baseAppSettings, handoffAppSettings, packageAppSettings, extraAppSettings)
    }
  }
  dependsOn: [
    hostBlobOwner
    hostQueueContributor
  ]
}

resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

resource appDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (!empty(logAnalyticsWorkspaceId)) {
  name: 'blobpipe-function-logs'
  scope: app
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

@description('Name of the Function App.')
output name string = app.name

@description('Default host name of the Function App.')
output defaultHostName string = app.properties.defaultHostName

@description('Name of the host storage account (upload the package to its app-package container).')
output hostStorageAccountName string = hostStorage.name
