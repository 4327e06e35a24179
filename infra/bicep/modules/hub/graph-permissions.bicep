// Microsoft Graph access for the `entra-app-secret` target: the application permission
// Application.ReadWrite.OwnedBy for the hub identity, and the hub identity as an owner of the
// applications whose secrets it rotates. main.bicep deploys this only with
// grantGraphPermission=true, because it needs a deployer who may grant Graph app roles
// (Privileged Role Administrator) and add application owners; infra/README.md has the steps, the
// rights and the az commands for doing the same by hand.
//
// OwnedBy, not Application.ReadWrite.All: with OwnedBy the hub can change only the applications
// it owns. ReadWrite.All would let it add a credential to any application in the tenant,
// privileged ones included, and then act as that application.
//
// The extension's types come from bicepconfig.json (infra/bicep/bicepconfig.json pins the
// version). Microsoft Graph Bicep deploys in the public cloud only.
extension microsoftGraphV1

@description('Principal (object) id of the hub identity\'s service principal.')
param hubPrincipalId string

@description('uniqueName of each application registration whose secret the hub rotates; the hub identity becomes one of its owners.')
param ownedApplicationUniqueNames array = []

// Microsoft Graph's application (client) id, the same in every tenant. Found with the search
// tool in the Graph Bicep quickstart templates (microsoftgraph/msgraph-bicep-types,
// quickstart-templates/apps-permissions-and-grants/main.bicep: `var graphAppId`).
var graphAppId = '00000003-0000-0000-c000-000000000000'

// The id of Graph's app role Application.ReadWrite.OwnedBy (application permission), the same
// in every tenant. Found with the search tool in the Microsoft Graph permissions reference
// (https://learn.microsoft.com/graph/permissions-reference, "Application.ReadWrite.OwnedBy",
// Identifier/Application). Not Application.ReadWrite.All (1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9).
var applicationReadWriteOwnedBy = '18a4783c-866b-4cc7-a460-3d5e5662c884'

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource ownedBy 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  appRoleId: applicationReadWriteOwnedBy
  principalId: hubPrincipalId
  resourceId: graph.id
}

// Read first: a uniqueName that does not exist fails here instead of creating a new application,
// and the owner module keeps the application's own display name (Graph requires one on write).
resource ownedApplications 'Microsoft.Graph/applications@v1.0' existing = [for uniqueName in ownedApplicationUniqueNames: {
  uniqueName: uniqueName
}]

module owner 'graph-app-owner.bicep' = [for (uniqueName, i) in ownedApplicationUniqueNames: {
  name: 'hub-app-owner-${i}'
  params: {
    uniqueName: uniqueName
    displayName: ownedApplications[i].displayName
    ownerPrincipalId: hubPrincipalId
  }
}]
