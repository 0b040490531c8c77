// Data-plane RBAC for the blobpipe identity, least privilege:
// - Storage Blob Data Contributor on the backup CONTAINER only (not the account);
// - Storage Queue Data Contributor on the account, only when the hand-off queue is used;
// - AcrPull on the container registry, only when a registry name is given;
// - Key Vault Crypto Service Encryption User (read key metadata, wrapKey, unwrapKey) on
//   ONE existing Key Vault key, only when a vault and key name are given
//   ([encryption] key_vault_key; docs/encryption.md).

@description('Name of the existing backup storage account.')
param storageAccountName string

@description('Name of the existing backup container the data role is scoped to.')
param containerName string

@description('Principal (object) id of the user-assigned identity that gets the roles.')
param principalId string

@description('Grant Storage Queue Data Contributor on the account (hand-off queue in use).')
param enableQueue bool = false

@description('Name of an Azure Container Registry in this resource group to grant AcrPull on; empty skips it.')
param acrName string = ''

@description('Name of an existing Key Vault (RBAC authorization) in this resource group whose key wraps the data key; empty skips it.')
param keyVaultName string = ''

@description('Name of the existing RSA key in that vault ([encryption] key_vault_key).')
param keyVaultKeyName string = ''

// Built-in role definition ids (identical in every tenant).
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'
var keyVaultCryptoServiceEncryptionUserRoleId = 'e147488a-f6f5-4113-8e2d-b22465e65bf6'
var useKeyVault = !empty(keyVaultName) && !empty(keyVaultKeyName)

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: containerName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (!empty(acrName)) {
  name: acrName
}

resource blobDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, principalId, storageBlobDataContributorRoleId)
  scope: container
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe: read and write backups in this container only'
  }
}

resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (enableQueue) {
  name: guid(account.id, principalId, storageQueueDataContributorRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe: send and receive run hand-off messages'
  }
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(acrName)) {
  name: guid(registry.id, principalId, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe: pull the job image'
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = if (useKeyVault) {
  name: keyVaultName
}

resource kek 'Microsoft.KeyVault/vaults/keys@2023-07-01' existing = if (useKeyVault) {
  parent: vault
  name: keyVaultKeyName
}

resource kekWrapUnwrap 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (useKeyVault) {
  name: guid(kek.id, principalId, keyVaultCryptoServiceEncryptionUserRoleId)
  scope: kek
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultCryptoServiceEncryptionUserRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe: wrap and unwrap the backup data key with this key only'
  }
}
