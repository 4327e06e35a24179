// The hub's identities. Everything the Function App does in Azure (task hub storage, spoke
// vaults, targets, consumer restarts) runs as `hub`, so one principal is granted and audited.
// Event Grid dead-letters with a second identity: it is attached to every spoke's system topic,
// and a topic must never be able to act as the hub.

@description('Name of the identity the Function App runs as.')
param hubIdentityName string

@description('Name of the identity Event Grid uses to write dead-lettered events to the hub.')
param deadLetterIdentityName string

param location string
param tags object = {}

resource hub 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: hubIdentityName
  location: location
  tags: tags
}

resource deadLetter 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: deadLetterIdentityName
  location: location
  tags: tags
}

output hubIdentityId string = hub.id
output hubClientId string = hub.properties.clientId
output hubPrincipalId string = hub.properties.principalId
output deadLetterIdentityId string = deadLetter.id
output deadLetterPrincipalId string = deadLetter.properties.principalId
