// User-assigned managed identity used by every blobpipe runtime (Container Apps jobs
// and the Function App). One identity, so RBAC is granted in one place.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity (for identity blocks and registry pulls).')
output id string = identity.id

@description('Client id of the identity (AZURE_CLIENT_ID for the engine).')
output clientId string = identity.properties.clientId

@description('Principal (object) id of the identity (for role assignments).')
output principalId string = identity.properties.principalId
