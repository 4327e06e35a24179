// The Durable Task Scheduler backend (durableBackend: 'durableTaskScheduler'): a scheduler, the
// task hub the app's host.json names, and the hub identity's data-plane role on that task hub only.
// The scheduler takes Entra tokens only (no keys exist), so the app connects with its managed
// identity: Endpoint=...;Authentication=ManagedIdentity;ClientID=... (function-app.bicep).

param name string
param location string
param tags object = {}

@description('Consumption: billed per dispatched action, nothing while idle. Dedicated: reserved capacity units.')
@allowed(['Consumption', 'Dedicated'])
param skuName string = 'Consumption'

@description('Principal id of the hub identity, the only identity given data access.')
param hubPrincipalId string

// The task hub must carry the name host.json gives the app's hub, or the app would talk to a hub
// that does not exist; read from the one file so the two cannot drift.
var taskHubName = loadJsonContent('../../../../host.json').extensions.durableTask.hubName

// Durable Task Data Contributor: the role the Durable Task Scheduler docs name for an app that both
// starts and runs orchestrations (Durable Task Worker cannot query or raise events).
var durableTaskDataContributor = '0ad04412-c4d5-4796-b79c-f76d14c8d402'

// Dedicated needs a capacity (1 unit; 3 for zone redundancy); Consumption takes none.
var sku = (skuName == 'Dedicated') ? { name: 'Dedicated', capacity: 1 } : { name: 'Consumption' }

resource scheduler 'Microsoft.DurableTask/schedulers@2025-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    // Required; an empty list refuses every caller. Flex Consumption without VNet integration has
    // no fixed outbound addresses, so the network stays open like the hub's storage account, and
    // only an Entra token with the role below gets in.
    ipAllowlist: [
      '0.0.0.0/0'
    ]
    sku: sku
  }
}

resource taskHub 'Microsoft.DurableTask/schedulers/taskHubs@2025-11-01' = {
  parent: scheduler
  name: taskHubName
  properties: {}
}

// Scoped to the task hub, not the scheduler: the least privilege the scheduler's docs recommend.
resource hubDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(taskHub.id, hubPrincipalId, durableTaskDataContributor)
  scope: taskHub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', durableTaskDataContributor)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output id string = scheduler.id
output endpoint string = scheduler.properties.endpoint
output taskHubName string = taskHub.name
