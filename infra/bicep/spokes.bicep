// Onboards many spoke vaults at once, in any subscriptions of the tenant. main.bicep calls this
// with its `spokes` list; it can also be deployed on its own with the hub's outputs
// (az deployment sub create -f infra/bicep/spokes.bicep -p @infra/bicep/examples/spokes.parameters.json).
targetScope = 'subscription'

@description('''One object per vault: subscriptionId, resourceGroupName, vaultName, location, and
optionally systemTopicName, consumerAppIds and storageAccountKeyTargetIds. A systemTopicName that
names an existing topic gets its identity block and tags replaced (modules/spoke/vault.bicep).''')
param spokes array

@description('Principal id of the hub identity (hub output hubPrincipalId).')
param hubPrincipalId string

@description('Resource id of the hub\'s Event Grid function (hub output eventFunctionResourceId).')
param eventFunctionResourceId string

@description('Create the event subscriptions; false until the hub\'s code is deployed.')
param connectEvents bool = true

param deadLetterStorageAccountId string
param deadLetterContainerName string
param deadLetterIdentityId string
param tags object = {}

// Each spoke is deployed into the vault's own resource group, in the vault's own subscription.
module spoke 'modules/spoke/vault.bicep' = [for s in spokes: {
  name: 'spoke-${uniqueString(s.subscriptionId, s.resourceGroupName, s.vaultName)}'
  scope: resourceGroup(s.subscriptionId, s.resourceGroupName)
  params: {
    vaultName: s.vaultName
    location: s.location
    systemTopicName: contains(s, 'systemTopicName') ? s.systemTopicName : '${s.vaultName}-events'
    hubPrincipalId: hubPrincipalId
    eventFunctionResourceId: eventFunctionResourceId
    connectEvents: connectEvents
    deadLetterStorageAccountId: deadLetterStorageAccountId
    deadLetterContainerName: deadLetterContainerName
    deadLetterIdentityId: deadLetterIdentityId
    consumerAppIds: contains(s, 'consumerAppIds') ? s.consumerAppIds : []
    storageAccountKeyTargetIds: contains(s, 'storageAccountKeyTargetIds') ? s.storageAccountKeyTargetIds : []
    tags: tags
  }
}]

output systemTopicIds array = [for (s, i) in spokes: spoke[i].outputs.systemTopicId]
