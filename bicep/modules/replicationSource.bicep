// Object replication, step 2 of 2: the policy on the SOURCE (primary) account, using
// the policy id and rule id Azure generated on the destination account (step 1).
// The ids are runtime values, which is why this is a module of its own: a module
// parameter may carry a runtime value into a resource name.

@description('Name of the existing source (primary) storage account.')
param sourceAccountName string

@description('Resource id of the destination (DR) storage account.')
param destinationAccountId string

@description('Policy id generated on the destination account.')
param policyId string

@description('Rule id generated on the destination account.')
param ruleId string

@description('Backup container on the source account.')
param sourceContainerName string

@description('Container on the destination account that receives the copies.')
param destinationContainerName string

@description('Also copy blobs that existed before the policy was created (must match the destination policy).')
param replicateExistingBlobs bool = true

resource source 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: sourceAccountName
}

resource policy 'Microsoft.Storage/storageAccounts/objectReplicationPolicies@2023-05-01' = {
  parent: source
  name: policyId
  properties: {
    sourceAccount: source.id
    destinationAccount: destinationAccountId
    rules: [
      {
        ruleId: ruleId
        sourceContainer: sourceContainerName
        destinationContainer: destinationContainerName
        filters: replicateExistingBlobs ? {
          minCreationTime: '1601-01-01T00:00:00Z'
        } : {}
      }
    ]
  }
}

@description('Policy id of the replication policy (same on both accounts).')
output policyId string = policy.name
