// The Event Grid custom topic the hub publishes its notifications to (CloudEvents 1.0: approval
// waiting, decided, failed, compensated, credentials left behind), and the hub identity's right to
// publish there. Keys and SAS tokens are off: only Entra tokens of an EventGrid Data Sender publish.
// Subscribe to it (a Logic App, an Azure Monitor action, a webhook) to route the notifications.

param name string
param location string
param tags object = {}

@description('Principal id of the hub identity, which publishes with its Entra token.')
param hubPrincipalId string

// EventGrid Data Sender: Microsoft.EventGrid/events/send/action and nothing else.
var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193: the hub publishes over the public endpoint, like its other dependencies (Flex Consumption without VNet integration); local auth is off, so only an Entra token of a Data Sender gets in
  name: name
  location: location
  tags: tags
  // Subscriptions deliver with the topic's own identity where a destination takes one (Service
  // Bus, Event Hubs, storage queues), so no destination needs a key either.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, hubPrincipalId, eventGridDataSender)
  scope: topic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
    principalId: hubPrincipalId
    principalType: 'ServicePrincipal'
  }
}

output id string = topic.id
output name string = topic.name
output endpoint string = topic.properties.endpoint
