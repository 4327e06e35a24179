"""A local stand-in for the Azure Functions host: runs this Function App's triggers, orchestrations
and activities without Azure, through the real azure-functions-durable SDK. See README.md here.
"""
