// The storage account's static website, for the blobpipe dashboard (`blobpipe report
// --publish` uploads it to `$web`). ARM has no property for it (it is a data-plane
// setting of the Blob service), so a deployment script turns it on with the Azure CLI,
// signed in as a script-only identity that holds Storage Account Contributor on this
// account (control plane, needed for Set Blob Service Properties). The blobpipe identity
// gets Storage Blob Data Contributor on the `$web` container only, after the script made
// it. Anything in `$web` is public on the account's web endpoint, within the account's
// network rules: publish only what may be seen, or keep the account private.

@description('Name of the existing backup storage account.')
param storageAccountName string

@description('Azure region for the script identity and the deployment script.')
param location string

@description('Tags for the resources created here.')
param tags object = {}

@description('Principal (object) id of the blobpipe identity that publishes the dashboard.')
param publisherPrincipalId string

@description('Document served for / and for missing paths.')
param indexDocument string = 'index.html'

var storageAccountContributorRoleId = '17d1049b-9a84-46fb-8f53-869881c3d3ab'
var storageBlobDataContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource scriptIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${storageAccountName}-web-script'
  location: location
  tags: tags
}

resource scriptRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, scriptIdentity.id, storageAccountContributorRoleId)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageAccountContributorRoleId)
    principalId: scriptIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe: enable the static website (deployment script only)'
  }
}

resource enable 'Microsoft.Resources/deploymentScripts@2023-08-01' = {
  name: '${storageAccountName}-enable-static-website'
  location: location
  tags: tags
  kind: 'AzureCLI'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${scriptIdentity.id}': {}
    }
  }
  properties: {
    azCliVersion: '2.61.0'
    retentionInterval: 'PT1H'
    cleanupPreference: 'OnSuccess'
    timeout: 'PT15M'
    environmentVariables: [
      {
        name: 'ACCOUNT'
        value: storageAccountName
      }
      {
        name: 'INDEX'
        value: indexDocument
      }
    ]
    scriptContent: 'az storage blob service-properties update --auth-mode login --account-name "$ACCOUNT" --static-website true --index-document "$INDEX" --404-document "$INDEX"'
  }
  dependsOn: [
    scriptRole
  ]
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource web 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: '$web'
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(web.id, publisherPrincipalId, storageBlobDataContributorRoleId)
  scope: web
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataContributorRoleId)
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe: publish the dashboard into $web only'
  }
  dependsOn: [
    enable
  ]
}

@description('The static website endpoint (https://<account>.z<N>.web.core.windows.net/).')
output webEndpoint string = account.properties.primaryEndpoints.web
