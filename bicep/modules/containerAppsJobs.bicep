// Container Apps managed environment + one scheduled Container Apps job per pipeline.
//
// Each job runs `blobpipe run /etc/blobpipe/pipelines/<file>` on its cron (UTC, 5
// fields). One execution = one run; the exit code is the outcome. A retried replica
// sees the same CONTAINER_APP_JOB_EXECUTION_NAME, which blobpipe uses as the run id,
// so a retry resumes the run instead of restarting it. The blob lease in blobpipe
// prevents two executions of one pipeline from running at once.

@description('Name of the Container Apps managed environment.')
param environmentName string

@description('Azure region of the environment and the jobs.')
param location string

@description('Tags applied to the environment and the jobs.')
param tags object = {}

@description('Name of the existing Log Analytics workspace (same resource group) that receives console logs.')
param logAnalyticsWorkspaceName string

@description('Resource id of a subnet delegated to Microsoft.App/environments (at least /27) with a Microsoft.Storage service endpoint; empty = no VNet integration.')
param infrastructureSubnetId string = ''

@description('Resource id of the user-assigned identity the jobs run as.')
param identityId string

@description('Client id of the user-assigned identity (exported as AZURE_CLIENT_ID).')
param identityClientId string

@description('Container image with the blobpipe binary, e.g. myacr.azurecr.io/blobpipe:1.0.0.')
param image string

@description('Login server of the registry the image is pulled from with the identity (e.g. myacr.azurecr.io); empty for a public image.')
param registryServer string = ''

@description('Blob endpoint of the backup account, exported as BLOBPIPE_STORAGE_URL so pipeline files can reference it.')
param storageBlobEndpoint string

@description('Backup container name, exported as BLOBPIPE_CONTAINER.')
param containerName string

@description('One entry per pipeline: {name, cron, pipelineFile, cpu, memory}; cpu is a decimal string such as 1.0 and memory a size such as 2Gi (a valid Consumption pair).')
param jobs array

@description('Seconds an execution may run before it is stopped (replicaTimeout).')
@minValue(60)
@maxValue(86400)
param replicaTimeoutSeconds int = 21600

@description('Times a failed replica is retried within one execution (replicaRetryLimit); retries resume the same run.')
@minValue(0)
@maxValue(10)
param replicaRetryLimit int = 2

@description('Extra environment variables for every job: array of {name, value} (non-secret values only).')
param extraEnv array = []

@description('Also create the freshness (RPO) job: `blobpipe check /etc/blobpipe/pipelines --max-age <freshnessMaxAge>` on freshnessCron; it exits non-zero and alerts when a pipeline has no recent verified snapshot (catches missed schedules).')
param enableFreshnessJob bool = true

@description('Cron (5 fields, UTC) of the freshness job.')
param freshnessCron string = '15 * * * *'

@description('Maximum age of the newest verified snapshot before the freshness job fails, e.g. 26h (pipelines may override with rpo).')
param freshnessMaxAge string = '26h'

@description('Hand-off queue name; not empty: add an event-triggered job (bp-handoff) that runs `blobpipe run-queued` once per message, for pipelines with [serve] handoff = "queue".')
param handoffQueueName string = ''

@description('Storage account holding the hand-off queue (the azure-queue scale rule reads its length with the job identity).')
param storageAccountName string = ''

@description('Queue endpoint of that account (https://<account>.queue.core.windows.net/).')
param storageQueueEndpoint string = ''

@description('Most hand-off executions at once (each runs one message; the run lock keeps runs of one pipeline apart).')
@minValue(1)
@maxValue(20)
param handoffMaxExecutions int = 2

var pipelineDir = '/etc/blobpipe/pipelines'
var handoffQueueUrl = '${storageQueueEndpoint}${handoffQueueName}'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: logAnalyticsWorkspaceName
}

resource managedEnvironment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
    vnetConfiguration: empty(infrastructureSubnetId) ? null : {
      infrastructureSubnetId: infrastructureSubnetId
      internal: true
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
    zoneRedundant: false
  }
}

resource pipelineJobs 'Microsoft.App/jobs@2024-03-01' = [for job in jobs: {
  name: toLower('bp-${job.name}')
  location: location
  tags: union(tags, {
    'blobpipe-pipeline': job.name
  })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: managedEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: 'Schedule'
      replicaTimeout: replicaTimeoutSeconds
      replicaRetryLimit: replicaRetryLimit
      scheduleTriggerConfig: {
        cronExpression: job.cron
        parallelism: 1
        replicaCompletionCount: 1
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
            'run'
            '${pipelineDir}/${job.pipelineFile}'
          ]
          env: concat([
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'BLOBPIPE_PIPELINE'
              value: '${pipelineDir}/${job.pipelineFile}'
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
}]

resource freshnessJob 'Microsoft.App/jobs@2024-03-01' = if (enableFreshnessJob) {
  name: 'bp-freshness-check'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: managedEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      triggerType: 'Schedule'
      replicaTimeout: 900
      replicaRetryLimit: 1
      scheduleTriggerConfig: {
        cronExpression: freshnessCron
        parallelism: 1
        replicaCompletionCount: 1
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
            'check'
            pipelineDir
            '--max-age'
            freshnessMaxAge
          ]
          env: concat([
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
          ], extraEnv)
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
        }
      ]
    }
  }
}

// Queue-triggered hand-off job: one execution per message (KEDA azure-queue scaler with
// the job identity). `run-queued` keeps the message invisible while it runs, deletes it on
// success and leaves it to reappear on failure. The scale rule's `identity` needs API
// version 2024-10-02-preview or later.
resource handoffJob 'Microsoft.App/jobs@2025-02-02-preview' = if (!empty(handoffQueueName)) {
  name: 'bp-handoff'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    environmentId: managedEnvironment.id
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
          maxExecutions: handoffMaxExecutions
          pollingInterval: 30
          rules: [
            {
              name: 'handoff-queue'
              type: 'azure-queue'
              metadata: {
                accountName: storageAccountName
                queueName: handoffQueueName
                queueLength: '1'
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
            'run-queued'
            pipelineDir
            '--visibility'
            '${replicaTimeoutSeconds}s'
          ]
          env: concat([
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'BLOBPIPE_HANDOFF_QUEUE'
              value: handoffQueueUrl
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
            cpu: json('1.0')
            memory: '2Gi'
          }
        }
      ]
    }
  }
}

@description('Resource id of the managed environment.')
output environmentId string = managedEnvironment.id

@description('Names of the scheduled jobs, in the order of the jobs parameter.')
output jobNames array = [for (job, i) in jobs: pipelineJobs[i].name]
