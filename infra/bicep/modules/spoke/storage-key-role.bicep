// The role the storage-account-key target needs: list and regenerate the account's keys, and
// nothing else (Storage Account Key Operator Service Role, on the one account).

param storageAccountName string
param principalId string

var storageAccountKeyOperator = '81a9662b-bebf-436f-a333-f67b29880f12'

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
