// Scale-out (docs/scale-out.md): one backup across many Container Apps job replicas.
//
// Per pipeline in `jobs`:
// - the work queue bp-work-<name> and its dead-letter queue bp-work-<name>-poison;
// - a parallel job bp-scale-<name> (parallelism = replicaCompletionCount = replicas),
//   manual or on a cron; every replica runs `blobpipe work <file> --coordinate`: the
//   first to take the run lease plans and enqueues the partitions, all of them work, one
//   of them commits. The execution name is the run id, so a retried execution resumes;
// - with eventDriven: true, also bp-scale-<name>-ev, triggered by KEDA's azure-queue
//   scaler on the work queue (managed identity), each execution running
//   `blobpipe work <file> --any-run` until the queue is empty (for a coordinator that
//   runs elsewhere: `blobpipe plan`);
// - Storage Queue Data Contributor for the job identity on those two queues only.
//   Message Processor is not enough: renewing a message's visibility is Update Message
//   (messages/write) and dead-lettering sends to the poison queue.

@description('Azure region of the jobs.')
param location string

@description('Tags applied to the jobs.')
param tags object = {}

@description('Resource id of the Container Apps managed environment.')
param environmentId string

@description('Resource id of the user-assigned identity the jobs run as.')
param identityId string

@description('Client id of the user-assigned identity (exported as AZURE_CLIENT_ID).')
param identityClientId string

@description('Principal (object) id of the user-assigned identity (queue role assignments).')
param identityPrincipalId string

@description('Container image with the blobpipe binary.')
param image string

@description('Login server of the registry the image is pulled from with the identity; empty for a public image.')
param registryServer string = ''

@description('Name of the existing backup storage account that holds the queues.')
param storageAccountName string

@description('Queue endpoint of that account (https://<account>.queue.core.windows.net/).')
param storageQueueEndpoint string

@description('Blob endpoint of the backup account, exported as BLOBPIPE_STORAGE_URL.')
param storageBlobEndpoint string

@description('Backup container name, exported as BLOBPIPE_CONTAINER.')
param containerName string

@description('One entry per scaled-out pipeline: {name, pipelineFile, replicas, cron, cpu, memory, eventDriven, maxExecutions}; cron empty = manual trigger; name at most 20 lowercase characters (job names bp-scale-<name>-ev have at most 32).')
param jobs array

@description('Seconds an execution may run before it is stopped (replicaTimeout).')
@minValue(60)
@maxValue(86400)
param replicaTimeoutSeconds int = 21600

@description('Times a failed replica is retried within one execution; retries resume the same run.')
@minValue(0)
@maxValue(10)
param replicaRetryLimit int = 2

@description('Extra environment variables for every job: array of {name, value} (non-secret values only).')
param extraEnv array = []

var pipelineDir = '/etc/blobpipe/pipelines'
// Built-in role definition id (identical in every tenant).
var storageQueueDataContributorRoleId = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource workQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for job in jobs: {
  parent: queueService
  name: 'bp-work-${toLower(job.name)}'
}]

resource poisonQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for job in jobs: {
  parent: queueService
  name: 'bp-work-${toLower(job.name)}-poison'
}]

resource workQueueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (job, i) in jobs: {
  name: guid(workQueues[i].id, identityPrincipalId, storageQueueDataContributorRoleId)
  scope: workQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe scale-out: send, receive, renew and delete partition messages'
  }
}]

resource poisonQueueRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (job, i) in jobs: {
  name: guid(poisonQueues[i].id, identityPrincipalId, storageQueueDataContributorRoleId)
  scope: poisonQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageQueueDataContributorRoleId)
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    description: 'blobpipe scale-out: dead-letter partition messages that keep failing'
  }
}]

resource parallelJobs 'Microsoft.App/jobs@2024-03-01' = [for (job, i) in jobs: {
  name: toLower('bp-scale-${job.name}')
  location: location
  tags: union(tags, {
    'blobpipe-pipeline': job.name
    'blobpipe-role': 'scale-out'
  })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: empty(job.cron) ? 'Manual' : 'Schedule'
      replicaTimeout: replicaTimeoutSeconds
      replicaRetryLimit: replicaRetryLimit
      manualTriggerConfig: empty(job.cron) ? {
        parallelism: job.replicas
        replicaCompletionCount: job.replicas
      } : null
      scheduleTriggerConfig: empty(job.cron) ? null : {
        cronExpression: job.cron
        parallelism: job.replicas
        replicaCompletionCount: job.replicas
      }
      registries: empty(registryServer) ? [] : [
        {
          server: registryServer
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'blobpipe'
          image: image
          command: [
            'blobpipe'
          ]
          args: [
            '--log-format'
            'json'
            'work'
            '${pipelineDir}/${job.pipelineFile}'
            '--coordinate'
          ]
          env: concat([
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'BLOBPIPE_WORK_QUEUE'
              value: '${storageQueueEndpoint}${workQueues[i].name}'
            }
            {
              name: 'BLOBPIPE_STORAGE_URL'
              value: storageBlobEndpoint
            }
            {
              name: 'BLOBPIPE_CONTAINER'
              value: containerName
            }
          ], extraEnv)
          resources: {
            cpu: json(job.cpu)
            memory: job.memory
          }
        }
      ]
    }
  }
  dependsOn: [
    workQueueRoles
    poisonQueueRoles
  ]
}]

// Event-driven workers: KEDA's azure-queue scaler with the job identity (the scale
// rule's `identity` needs API version 2024-10-02-preview or later).
resource eventJobs 'Microsoft.App/jobs@2025-02-02-preview' = [for (job, i) in jobs: if (job.eventDriven) {
  name: toLower('bp-scale-${job.name}-ev')
  location: location
  tags: union(tags, {
    'blobpipe-pipeline': job.name
    'blobpipe-role': 'scale-out-events'
  })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: 'Event'
      replicaTimeout: replicaTimeoutSeconds
      replicaRetryLimit: replicaRetryLimit
      eventTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
        scale: {
          minExecutions: 0
          maxExecutions: job.maxExecutions
          pollingInterval: 30
          rules: [
            {
              name: 'work-queue'
              type: 'azure-queue'
              metadata: {
                accountName: storageAccountName
                queueName: workQueues[i].name
                queueLength: '5'
              }
              identity: identityId
            }
          ]
        }
      }
      registries: empty(registryServer) ? [] : [
        {
          server: registryServer
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'blobpipe'
          image: image
          command: [
            'blobpipe'
          ]
          args: [
            '--log-format'
            'json'
            'work'
            '${pipelineDir}/${job.pipelineFile}'
            '--any-run'
          ]
          env: concat([
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'BLOBPIPE_WORK_QUEUE'
              value: '${storageQueueEndpoint}${workQueues[i].name}'
            }
            {
              name: 'BLOBPIPE_STORAGE_URL'
              value: storageBlobEndpoint
            }
            {
              name: 'BLOBPIPE_CONTAINER'
              value: containerName
            }
          ], extraEnv)
          resources: {
            cpu: json(job.cpu)
            memory: job.memory
          }
        }
      ]
    }
  }
  dependsOn: [
    workQueueRoles
    poisonQueueRoles
  ]
}]

@description('Names of the parallel scale-out jobs, in the order of the jobs parameter.')
output jobNames array = [for (job, i) in jobs: parallelJobs[i].name]

@description('Work queue names, in the order of the jobs parameter.')
output workQueueNames array = [for (job, i) in jobs: workQueues[i].name]
