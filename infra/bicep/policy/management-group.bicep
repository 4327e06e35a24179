// The rotation hub's policies, defined and assigned at a management group (every spoke below it):
// the built-in "Key Vault secrets should have an expiration date" (a secret without an expiry
// never raises SecretNearExpiry, so it would never rotate) and the custom audit of vaults not
// wired to the hub, grouped in one initiative. subscription.bicep is the same for one subscription.
targetScope = 'managementGroup'

@description('Effect for secrets without an expiration date. Start with Audit; Deny blocks writing such secrets.')
@allowed(['Audit', 'Deny', 'Disabled'])
param secretExpiryEffect string = 'Audit'

@description('Effect for vaults whose system topic does not deliver expiry events to the hub.')
@allowed(['AuditIfNotExists', 'Disabled'])
param eventsEffect string = 'AuditIfNotExists'

@description('Resource id of the hub\'s Event Grid function (azd output ROTATION_EVENT_FUNCTION_RESOURCE_ID).')
param hubFunctionResourceId string

// Azure limits a policy assignment's name to 24 characters at management-group scope: longer names fail the deployment late.
@description('Name of the policy assignment: at most 24 characters at a management group, 64 at a subscription (Azure\'s limits).')
@minLength(1)
@maxLength(24)
param assignmentName string = 'keyvault-rotation-hub'

var eventsRule = loadJsonContent('../../policy/keyvault-events-to-hub.json')

// Built-in, v1.0.2, mode Microsoft.KeyVault.Data; its effect parameter is `effect`.
var secretsShouldExpire = tenantResourceId('Microsoft.Authorization/policyDefinitions', '98728c90-32c7-4049-8429-847dc0f4fe37')

resource eventsDefinition 'Microsoft.Authorization/policyDefinitions@2023-04-01' = {
  name: eventsRule.name
  properties: eventsRule.properties
}

resource initiative 'Microsoft.Authorization/policySetDefinitions@2023-04-01' = {
  name: 'keyvault-rotation-hub'
  properties: {
    displayName: 'Key Vault rotation hub'
    description: 'Secrets carry an expiry date, and every vault sends its expiry events to the rotation hub.'
    policyType: 'Custom'
    metadata: {
      version: '1.0.0'
      category: 'Key Vault'
    }
    parameters: {
      secretExpiryEffect: {
        type: 'String'
        allowedValues: ['Audit', 'Deny', 'Disabled']
        defaultValue: 'Audit'
      }
      eventsEffect: {
        type: 'String'
        allowedValues: ['AuditIfNotExists', 'Disabled']
        defaultValue: 'AuditIfNotExists'
      }
      hubFunctionResourceId: {
        type: 'String'
      }
    }
    // Bicep passes a string that starts with '[' through as a literal, so these reach Azure
    // Policy as the policy-language expressions they are.
    policyDefinitions: [
      {
        policyDefinitionReferenceId: 'secretsShouldExpire'
        policyDefinitionId: secretsShouldExpire
        parameters: {
          effect: {
            value: '[parameters(\'secretExpiryEffect\')]'
          }
        }
      }
      {
        policyDefinitionReferenceId: 'vaultEventsToHub'
        policyDefinitionId: eventsDefinition.id
        parameters: {
          effect: {
            value: '[parameters(\'eventsEffect\')]'
          }
          hubFunctionResourceId: {
            value: '[parameters(\'hubFunctionResourceId\')]'
          }
        }
      }
    ]
  }
}

// Audit effects only, so the assignment needs no managed identity (nothing is remediated).
resource assignment 'Microsoft.Authorization/policyAssignments@2024-04-01' = {
  name: assignmentName
  properties: {
    displayName: 'Key Vault rotation hub'
    policyDefinitionId: initiative.id
    parameters: {
      secretExpiryEffect: {
        value: secretExpiryEffect
      }
      eventsEffect: {
        value: eventsEffect
      }
      hubFunctionResourceId: {
        value: hubFunctionResourceId
      }
    }
    nonComplianceMessages: [
      {
        policyDefinitionReferenceId: 'secretsShouldExpire'
        message: 'Give the secret an expiration date: without one it never raises SecretNearExpiry and is never rotated.'
      }
      {
        policyDefinitionReferenceId: 'vaultEventsToHub'
        message: 'Onboard this vault as a spoke of the rotation hub (infra/README.md), so its expiry events reach the hub.'
      }
    ]
  }
}

output assignmentId string = assignment.id
output initiativeId string = initiative.id
