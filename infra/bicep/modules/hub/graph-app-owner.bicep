// Adds one owner to one existing application registration (graph-permissions.bicep calls this
// once per application, after reading it). A deployment of its own, so that the application is
// read there before it is written here and no template declares it twice.
//
// Microsoft.Graph/applications is written as an upsert keyed by uniqueName: properties left out
// here stay as they are, and displayName (required) is written back unchanged. `append` adds
// the owner and keeps every existing one; `replace` would remove the people who own the app.
extension microsoftGraphV1

@description('uniqueName of the application registration.')
param uniqueName string

@description('The application\'s current display name, read by the caller.')
param displayName string

@description('Principal (object) id of the service principal that becomes an owner.')
param ownerPrincipalId string

resource application 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: uniqueName
  displayName: displayName
  owners: {
    relationshipSemantics: 'append'
    relationships: [
      ownerPrincipalId
    ]
  }
}
