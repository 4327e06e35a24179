// Website Contributor for the hub on one consuming app: restart it after a promotion and read
// its state to see that it runs again. Nothing broader than the one site.

param siteName string
param principalId string

var websiteContributor = 'de139f84-1756-47ae-9be6-808fbbe84772'

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

resource restart 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(site.id, principalId, websiteContributor)
  scope: site
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', websiteContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
