// Lifecycle management policy for blobpipe packs.
//
// One rule per pipeline, matching ONLY '<container>/<prefix>/packs/': packs move to
// Cool, Cold and Archive after N days since last modification (packs are create-only,
// so modification time = upload time). There is deliberately NO delete action: packs
// are deleted only by blobpipe's own retention, which knows which manifests still
// reference them. Manifests and records under '<prefix>/snapshots/', 'parts/', 'runs/'
// and 'verify/' match no rule and stay in the Hot tier.
//
// Keep these rules equal to what `blobpipe lifecycle` prints for the shipped pipelines;
// `scripts/check-bicep --lifecycle-json FILE` compares them.

@description('Name of the existing storage account that gets the policy.')
param storageAccountName string

@description('Name of the backup container the pipelines write into.')
param containerName string

@description('One entry per pipeline: {name, prefix, coolAfterDays, coldAfterDays, archiveAfterDays}; a day count of 0 skips that tier. prefix has no leading or trailing slash.')
param rules array

var policyRules = [for rule in rules: {
  enabled: true
  // Rule names must be alphanumeric: drop '-', '_' and '.' from the pipeline name.
  name: 'packs${replace(replace(replace(rule.name, '-', ''), '_', ''), '.', '')}'
  type: 'Lifecycle'
  definition: {
    filters: {
      blobTypes: [
        'blockBlob'
      ]
      prefixMatch: [
        '${containerName}/${rule.prefix}/packs/'
      ]
    }
    actions: {
      baseBlob: union(
        rule.coolAfterDays > 0 ? {
          tierToCool: {
            daysAfterModificationGreaterThan: rule.coolAfterDays
          }
        } : {},
        rule.coldAfterDays > 0 ? {
          tierToCold: {
            daysAfterModificationGreaterThan: rule.coldAfterDays
          }
        } : {},
        rule.archiveAfterDays > 0 ? {
          tierToArchive: {
            daysAfterModificationGreaterThan: rule.archiveAfterDays
          }
        } : {}
      )
    }
  }
}]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource policy 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: policyRules
    }
  }
}

@description('Number of lifecycle rules deployed.')
output ruleCount int = length(policyRules)
