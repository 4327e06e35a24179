// The roles the storage-account-key target needs on the one account, and nothing else:
// Storage Account Key Operator Service Role (list and regenerate keys) and Reader (the account's
// settings: allowSharedKeyAccess and its endpoints, read before any key is regenerated).

param storageAccountName string
param principalId string

var storageAccountKeyOperator = '81a9662b-bebf-436f-a333-f67b29880f12'
var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource keyOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, storageAccountKeyOperator)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageAccountKeyOperator)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource accountReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, reader)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
