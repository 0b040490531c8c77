// Log Analytics workspace: receives the structured JSON logs the jobs write to stdout
// (ContainerAppConsoleLogs_CL), Function App logs and the storage resource logs.

@description('Name of the Log Analytics workspace.')
param name string

@description('Azure region of the workspace.')
param location string

@description('Tags applied to the workspace.')
param tags object = {}

@description('Days logs are kept.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

@description('Resource id of the workspace.')
output id string = workspace.id

@description('Name of the workspace.')
output name string = workspace.name

@description('Workspace (customer) id, used in log queries.')
output customerId string = workspace.properties.customerId
