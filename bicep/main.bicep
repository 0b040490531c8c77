// blobpipe: everything a team needs to run backup pipelines into Azure Blob Storage.
//
//   az deployment group create -g <rg> -f bicep/main.bicep \
//     -p @bicep/examples/containerapps.parameters.json
//
// Resources (see docs/deploy.md for what each one is for):
// - backup storage account + blob service + private backup container (modules/storage.bicep)
// - lifecycle management policy: packs tier down, never deleted (modules/lifecycle.bicep)
// - user-assigned identity + least-privilege RBAC (modules/identity.bicep, modules/roles.bicep)
// - optional VNet so the storage firewall can stay closed (modules/network.bicep)
// - optional DR copy: second account in another region + object replication
// - Log Analytics (modules/monitoring.bicep)
// - deploymentMode 'containerAppsJob': Container Apps environment + one scheduled job
//   per pipeline (modules/containerAppsJobs.bicep)
// - optional scale-out: work + dead-letter queues and parallel / queue-triggered jobs
//   whose replicas share one run (modules/scaleOut.bicep, docs/scale-out.md)
// - deploymentMode 'functionApp': Linux Function App running blobpipe as a custom
//   handler (modules/functionApp.bicep)

targetScope = 'resourceGroup'

// ---------------------------------------------------------------------------------------
// General
// ---------------------------------------------------------------------------------------

@description('Azure region of the primary deployment.')
param location string = resourceGroup().location

@description('Short lowercase alphanumeric prefix for resource names (2-10 characters).')
@minLength(2)
@maxLength(10)
param namePrefix string = 'blobpipe'

@description('Tags applied to every resource.')
param tags object = {
  application: 'blobpipe'
}

@description('How blobpipe runs: scheduled Container Apps jobs, or a Function App (custom handler).')
@allowed([
  'containerAppsJob'
  'functionApp'
])
param deploymentMode string = 'containerAppsJob'

// ---------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------

@description('Replication SKU of the backup account. Archive tier needs LRS, GRS or RA-GRS.')
@allowed([
  'Standard_LRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

@description('Allow Shared Key (account key / account SAS) authorization on the backup account. Default off: Entra ID only.')
param allowSharedKeyAccess bool = false

@description('Enable infrastructure encryption (double encryption at rest). Only settable at account creation.')
param requireInfrastructureEncryption bool = false

@description('Network rules of the backup account (networkAcls object with defaultAction, bypass, ipRules, virtualNetworkRules). The job/function subnets are added automatically.')
param storageNetworkAcls object = {
  defaultAction: 'Deny'
  bypass: 'AzureServices'
  ipRules: []
  virtualNetworkRules: []
}

@description('Name of the private backup container all pipelines write into.')
@minLength(3)
@maxLength(63)
param containerName string = 'backups'

@description('Blob soft delete retention in days.')
@minValue(1)
@maxValue(365)
param blobSoftDeleteDays int = 14

@description('Container soft delete retention in days.')
@minValue(1)
@maxValue(365)
param containerSoftDeleteDays int = 14

@description('Time-based retention (WORM) on the backup container in days; 0 disables it. blobpipe retention cannot delete packs younger than this.')
@minValue(0)
@maxValue(146000)
param immutabilityDays int = 0

@description('Version-level immutability on the backup container, for pipelines with an [immutability] table (each snapshot\'s blobs get their own write-once policy after commit; see docs/immutability.md). Use this or immutabilityDays, not both.')
param enableVersionLevelImmutability bool = false

@description('Lifecycle rules, one per pipeline: {name, prefix, coolAfterDays, coldAfterDays, archiveAfterDays}. They match only <container>/<prefix>/packs/ and never delete; 0 days skips a tier. Keep equal to `blobpipe lifecycle` output.')
param lifecycleRules array

@description('Create the hand-off queue and grant Storage Queue Data Contributor on the account; in containerAppsJob mode also add the queue-triggered bp-handoff job (blobpipe run-queued), in function mode set BLOBPIPE_HANDOFF_QUEUE.')
param enableQueue bool = false

@description('Turn on the static website of the backup account, for the dashboard (`blobpipe report --publish` writes to $web; docs/dashboard.md). Content in $web is served on the web endpoint within the account\'s network rules.')
param enableStaticWebsite bool = false

@description('Name of the hand-off queue (when enableQueue).')
param handoffQueueName string = 'blobpipe-runs'

// ---------------------------------------------------------------------------------------
// Network
// ---------------------------------------------------------------------------------------

@description('Create a VNet whose subnets (with a Microsoft.Storage service endpoint) host the Container Apps environment / Function App integration, and allow them through the storage firewall.')
param createVnet bool = true

@description('Address space of the created VNet.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Container Apps subnet prefix in the created VNet.')
param appsSubnetPrefix string = '10.40.0.0/23'

@description('Function App integration subnet prefix in the created VNet.')
param functionsSubnetPrefix string = '10.40.2.0/26'

@description('Existing subnet for the Container Apps environment when createVnet is false; empty = no VNet.')
param existingAppsSubnetId string = ''

@description('Existing subnet for Function App VNet integration when createVnet is false; empty = none.')
param existingFunctionsSubnetId string = ''

// ---------------------------------------------------------------------------------------
// Disaster recovery
// ---------------------------------------------------------------------------------------

@description('Create a second storage account in drLocation and replicate the backup container to it (object replication).')
param enableObjectReplication bool = false

@description('Region of the disaster-recovery account (must differ from location when replication is enabled).')
param drLocation string = ''

@description('Replication SKU of the disaster-recovery account.')
@allowed([
  'Standard_LRS'
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
])
param drStorageSkuName string = 'Standard_GRS'

@description('Network rules of the disaster-recovery account.')
param drNetworkAcls object = {
  defaultAction: 'Deny'
  bypass: 'AzureServices'
  ipRules: []
  virtualNetworkRules: []
}

@description('Time-based retention (WORM) days on the DR container; 0 disables it.')
@minValue(0)
@maxValue(146000)
param drImmutabilityDays int = 0

// ---------------------------------------------------------------------------------------
// Runtime
// ---------------------------------------------------------------------------------------

@description('Container image with blobpipe and the pipeline files, e.g. myacr.azurecr.io/blobpipe:0.1.0.')
param containerImage string = ''

@description('Azure Container Registry (same resource group) the image is pulled from with the identity; empty for a public image.')
param acrName string = ''

@description('[encryption] key_vault_key: an existing Key Vault (RBAC authorization, same resource group) and RSA key the identity may wrap and unwrap with; empty skips the role assignment. Create the key with `az keyvault key create --kty RSA --size 3072 --ops wrapKey unwrapKey` (docs/encryption.md).')
param keyVaultName string = ''

@description('Name of the RSA key in keyVaultName.')
param keyVaultKeyName string = ''

@description('Scheduled jobs, one per pipeline: {name, cron, pipelineFile, cpu, memory}; cron is 5-field UTC, pipelineFile is relative to /etc/blobpipe/pipelines.')
param jobs array = []

@description('Scale-out pipelines (containerAppsJob mode, docs/scale-out.md): one entry per pipeline, {name, pipelineFile, replicas, cron, cpu, memory, eventDriven, maxExecutions}; cron empty = manual trigger. Each gets a work queue, a dead-letter queue and a parallel job (plus an event-triggered one when eventDriven).')
param scaleOutJobs array = []

@description('Maximum seconds one job execution may run (replicaTimeout).')
@minValue(60)
@maxValue(86400)
param replicaTimeoutSeconds int = 21600

@description('Retries of a failed replica within one execution (replicaRetryLimit).')
@minValue(0)
@maxValue(10)
param replicaRetryLimit int = 2

@description('Create the scheduled freshness (RPO) check job (containerAppsJob mode).')
param enableFreshnessJob bool = true

@description('Cron (5 fields, UTC) of the freshness check job.')
param freshnessCron string = '15 * * * *'

@description('Maximum age of the newest verified snapshot before the freshness check fails and alerts, e.g. 26h.')
param freshnessMaxAge string = '26h'

@description('Extra non-secret environment variables for the jobs / app settings for the Function App: array of {name, value}.')
param extraEnv array = []

@description('Dedicated Linux App Service plan SKU for functionApp mode.')
param functionPlanSku string = 'P0v3'

@description('Blob URL of the Function App zip package (functionApp mode), read with the identity; empty to deploy it later.')
param functionPackageUrl string = ''

@description('Inbound public network access to the Function App (functionApp mode). Timer triggers need none.')
@allowed([
  'Enabled'
  'Disabled'
])
param functionPublicNetworkAccess string = 'Disabled'

@description('Log Analytics retention in days.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 90

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

var suffix = uniqueString(resourceGroup().id)
var storageAccountName = take(toLower('${namePrefix}${suffix}'), 24)
var drStorageAccountName = take(toLower('${namePrefix}dr${uniqueString(resourceGroup().id, drLocation)}'), 24)
var hostStorageAccountName = take(toLower('${namePrefix}fn${suffix}'), 24)
var useJobs = deploymentMode == 'containerAppsJob'
var useFunctions = deploymentMode == 'functionApp'
// The queue-triggered hand-off job (bp-handoff) needs the Container Apps environment in
// functionApp mode too.
var useHandoffJob = useFunctions && enableQueue
var useContainerApps = useJobs || useHandoffJob
var registryServer = empty(acrName) ? '' : '${acrName}${environment().suffixes.acrLoginServer}'

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

module network 'modules/network.bicep' = if (createVnet) {
  name: 'blobpipe-network'
  params: {
    name: '${namePrefix}-vnet'
    location: location
    tags: tags
    addressPrefix: vnetAddressPrefix
    appsSubnetPrefix: appsSubnetPrefix
    functionsSubnetPrefix: functionsSubnetPrefix
  }
}

var appsSubnetId = createVnet ? network.outputs.appsSubnetId : existingAppsSubnetId
var functionsSubnetId = createVnet ? network.outputs.functionsSubnetId : existingFunctionsSubnetId
var runtimeSubnetId = useJobs ? appsSubnetId : functionsSubnetId
var runtimeSubnetRules = empty(runtimeSubnetId) ? [] : [
  {
    id: runtimeSubnetId
    action: 'Allow'
  }
]
var handoffSubnetRules = (useHandoffJob && !empty(appsSubnetId)) ? [
  {
    id: appsSubnetId
    action: 'Allow'
  }
] : []
var effectiveNetworkAcls = union(storageNetworkAcls, {
  virtualNetworkRules: concat(storageNetworkAcls.virtualNetworkRules, runtimeSubnetRules, handoffSubnetRules)
})
var functionHostNetworkAcls = {
  defaultAction: 'Deny'
  bypass: 'AzureServices'
  ipRules: storageNetworkAcls.ipRules
  virtualNetworkRules: runtimeSubnetRules
}

module identity 'modules/identity.bicep' = {
  name: 'blobpipe-identity'
  params: {
    name: '${namePrefix}-identity'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'blobpipe-monitoring'
  params: {
    name: '${namePrefix}-logs'
    location: location
    tags: tags
    retentionInDays: logRetentionDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'blobpipe-storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSkuName
    allowSharedKeyAccess: allowSharedKeyAccess
    requireInfrastructureEncryption: requireInfrastructureEncryption
    networkAcls: effectiveNetworkAcls
    containerName: containerName
    blobSoftDeleteDays: blobSoftDeleteDays
    containerSoftDeleteDays: containerSoftDeleteDays
    immutabilityDays: immutabilityDays
    enableVersionLevelImmutability: enableVersionLevelImmutability
    enableQueue: enableQueue
    queueName: handoffQueueName
    logAnalyticsWorkspaceId: monitoring.outputs.id
  }
}

module lifecycle 'modules/lifecycle.bicep' = {
  name: 'blobpipe-lifecycle'
  params: {
    storageAccountName: storage.outputs.name
    containerName: containerName
    rules: lifecycleRules
  }
}

module staticWebsite 'modules/staticWebsite.bicep' = if (enableStaticWebsite) {
  name: 'blobpipe-static-website'
  params: {
    storageAccountName: storage.outputs.name
    location: location
    tags: tags
    publisherPrincipalId: identity.outputs.principalId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'blobpipe-roles'
  params: {
    storageAccountName: storage.outputs.name
    containerName: storage.outputs.containerName
    principalId: identity.outputs.principalId
    enableQueue: enableQueue
    acrName: acrName
    keyVaultName: keyVaultName
    keyVaultKeyName: keyVaultKeyName
  }
}

module drStorage 'modules/storage.bicep' = if (enableObjectReplication) {
  name: 'blobpipe-dr-storage'
  params: {
    name: drStorageAccountName
    location: drLocation
    tags: tags
    skuName: drStorageSkuName
    allowSharedKeyAccess: allowSharedKeyAccess
    requireInfrastructureEncryption: requireInfrastructureEncryption
    networkAcls: drNetworkAcls
    containerName: containerName
    blobSoftDeleteDays: blobSoftDeleteDays
    containerSoftDeleteDays: containerSoftDeleteDays
    immutabilityDays: drImmutabilityDays
    enableQueue: false
    logAnalyticsWorkspaceId: monitoring.outputs.id
  }
}

module drLifecycle 'modules/lifecycle.bicep' = if (enableObjectReplication) {
  name: 'blobpipe-dr-lifecycle'
  params: {
    storageAccountName: drStorage.outputs.name
    containerName: containerName
    rules: lifecycleRules
  }
}

module replicationDestination 'modules/replicationDestination.bicep' = if (enableObjectReplication) {
  name: 'blobpipe-replication-destination'
  params: {
    destinationAccountName: drStorage.outputs.name
    sourceAccountId: storage.outputs.id
    sourceContainerName: storage.outputs.containerName
    destinationContainerName: drStorage.outputs.containerName
  }
}

module replicationSource 'modules/replicationSource.bicep' = if (enableObjectReplication) {
  name: 'blobpipe-replication-source'
  params: {
    sourceAccountName: storage.outputs.name
    destinationAccountId: replicationDestination.outputs.destinationAccountId
    policyId: replicationDestination.outputs.policyId
    ruleId: replicationDestination.outputs.ruleId
    sourceContainerName: storage.outputs.containerName
    destinationContainerName: drStorage.outputs.containerName
  }
}

module containerApps 'modules/containerAppsJobs.bicep' = if (useContainerApps) {
  name: 'blobpipe-container-apps'
  params: {
    environmentName: '${namePrefix}-env'
    location: location
    tags: tags
    logAnalyticsWorkspaceName: monitoring.outputs.name
    infrastructureSubnetId: appsSubnetId
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    image: containerImage
    registryServer: registryServer
    storageBlobEndpoint: storage.outputs.blobEndpoint
    containerName: storage.outputs.containerName
    handoffQueueName: enableQueue ? handoffQueueName : ''
    storageAccountName: storage.outputs.name
    storageQueueEndpoint: storage.outputs.queueEndpoint
    jobs: useJobs ? jobs : []
    replicaTimeoutSeconds: replicaTimeoutSeconds
    replicaRetryLimit: replicaRetryLimit
    enableFreshnessJob: useJobs && enableFreshnessJob
    freshnessCron: freshnessCron
    freshnessMaxAge: freshnessMaxAge
    extraEnv: extraEnv
  }
  dependsOn: [
    roles
  ]
}

module scaleOut 'modules/scaleOut.bicep' = if (useJobs && !empty(scaleOutJobs)) {
  name: 'blobpipe-scale-out'
  params: {
    location: location
    tags: tags
    environmentId: containerApps.outputs.environmentId
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityPrincipalId: identity.outputs.principalId
    image: containerImage
    registryServer: registryServer
    storageAccountName: storage.outputs.name
    storageQueueEndpoint: storage.outputs.queueEndpoint
    storageBlobEndpoint: storage.outputs.blobEndpoint
    containerName: storage.outputs.containerName
    jobs: scaleOutJobs
    replicaTimeoutSeconds: replicaTimeoutSeconds
    replicaRetryLimit: replicaRetryLimit
    extraEnv: extraEnv
  }
}

module functionApp 'modules/functionApp.bicep' = if (useFunctions) {
  name: 'blobpipe-function-app'
  params: {
    name: '${namePrefix}-func-${suffix}'
    location: location
    tags: tags
    hostStorageAccountName: hostStorageAccountName
    planSku: functionPlanSku
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    identityPrincipalId: identity.outputs.principalId
    packageUrl: functionPackageUrl
    storageBlobEndpoint: storage.outputs.blobEndpoint
    containerName: storage.outputs.containerName
    handoffQueueUrl: enableQueue ? '${storage.outputs.queueEndpoint}${handoffQueueName}' : ''
    virtualNetworkSubnetId: functionsSubnetId
    hostStorageNetworkAcls: functionHostNetworkAcls
    publicNetworkAccess: functionPublicNetworkAccess
    logAnalyticsWorkspaceId: monitoring.outputs.id
    extraAppSettings: extraEnv
  }
  dependsOn: [
    roles
  ]
}

// ---------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------

@description('Name of the backup storage account.')
output storageAccountName string = storage.outputs.name

@description('Blob endpoint of the backup account (target.url of the pipelines).')
output blobEndpoint string = storage.outputs.blobEndpoint

@description('Name of the backup container.')
output backupContainerName string = storage.outputs.containerName

@description('Client id of the blobpipe identity (AZURE_CLIENT_ID).')
output identityClientId string = identity.outputs.clientId

@description('Resource id of the blobpipe identity.')
output identityId string = identity.outputs.id

@description('Name of the disaster-recovery storage account (empty when replication is off).')
output drStorageAccountName string = enableObjectReplication ? drStorageAccountName : ''

@description('Names of the scheduled Container Apps jobs (containerAppsJob mode).')
output jobNames array = useJobs ? containerApps.outputs.jobNames : []

@description('Names of the parallel scale-out jobs (containerAppsJob mode with scaleOutJobs).')
output scaleOutJobNames array = (useJobs && !empty(scaleOutJobs)) ? scaleOut.outputs.jobNames : []

@description('Name of the Function App (functionApp mode).')
output functionAppName string = useFunctions ? functionApp.outputs.name : ''

@description('Static website endpoint for the dashboard (empty unless enableStaticWebsite).')
output staticWebsiteEndpoint string = enableStaticWebsite ? staticWebsite.outputs.webEndpoint : ''
