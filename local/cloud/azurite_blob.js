#!/usr/bin/env node
"use strict";
// Azurite's blob service (the version local/cloud/azurite.py pins), started by the local cloud with
// two changes to how it refuses Shared Key requests, so that it refuses them as Azure Storage does,
// and a SIGTERM guard (at the end).
// Every signature is still checked by Azurite's own code; nothing here computes or compares one.
//
// 1. A Shared Key request whose signature matches neither key: Azure answers 403 AuthenticationFailed
//    (with an AuthenticationErrorDetail), which azure-storage-blob raises as ClientAuthenticationError;
//    Azurite answers 403 AuthorizationFailure, which the SDK raises as a plain HttpResponseError.
// 2. Accounts named in LOCAL_CLOUD_SHARED_KEY_DISABLED (allowSharedKeyAccess false): a Shared Key
//    request, or a SAS signed with an account key, gets 403 KeyBasedAuthenticationNotPermitted before
//    any signature is looked at. Azurite has no such setting. (Such accounts are also left out of
//    AZURITE_ACCOUNTS, so Azurite does not know their keys at all.)
//
// Environment: LOCAL_CLOUD_AZURITE_PACKAGE (the azurite package directory), AZURITE_ACCOUNTS,
// LOCAL_CLOUD_SHARED_KEY_DISABLED (comma-separated account names). Arguments: azurite-blob's own.

const path = require("path");

const blobDir = path.join(process.env.LOCAL_CLOUD_AZURITE_PACKAGE || "", "dist", "src", "blob");

function load(relative) {
  const loaded = require(path.join(blobDir, relative));
  if (loaded === undefined || loaded.default === undefined) {
    throw new Error(`Azurite changed: ${relative} has no default export`);
  }
  return loaded.default;
}

const SharedKeyAuthenticator = load("authentication/BlobSharedKeyAuthenticator");
const AccountSASAuthenticator = load("authentication/AccountSASAuthenticator");
const BlobSASAuthenticator = load("authentication/BlobSASAuthenticator");
const BlobStorageContext = load("context/BlobStorageContext");
const StorageError = load("errors/StorageError");
const StorageErrorFactory = load("errors/StorageErrorFactory");
for (const [name, cls] of [
  ["BlobSharedKeyAuthenticator", SharedKeyAuthenticator],
  ["AccountSASAuthenticator", AccountSASAuthenticator],
  ["BlobSASAuthenticator", BlobSASAuthenticator],
]) {
  if (typeof cls.prototype.validate !== "function") {
    throw new Error(`Azurite changed: ${name}.validate is missing`);
  }
}
if (typeof StorageErrorFactory.getAuthenticationFailed !== "function") {
  throw new Error("Azurite changed: StorageErrorFactory.getAuthenticationFailed is missing");
}

const sharedKeyDisabled = new Set(
  (process.env.LOCAL_CLOUD_SHARED_KEY_DISABLED || "")
    .split(",")
    .map((name) => name.trim().toLowerCase())
    .filter((name) => name.length > 0),
);

function keyBasedAuthenticationNotPermitted(contextId) {
  return new StorageError(
    403,
    "KeyBasedAuthenticationNotPermitted",
    "Key based authentication is not permitted on this storage account.",
    contextId,
  );
}

const sharedKeyValidate = SharedKeyAuthenticator.prototype.validate;
SharedKeyAuthenticator.prototype.validate = async function validate(req, context) {
  const blobContext = new BlobStorageContext(context);
  const header = req.getHeader("authorization");
  const sharedKey = typeof header === "string" && header.startsWith("SharedKey");
  if (sharedKey && sharedKeyDisabled.has(String(blobContext.account).toLowerCase())) {
    throw keyBasedAuthenticationNotPermitted(blobContext.contextId);
  }
  const passed = await sharedKeyValidate.call(this, req, context);
  if (sharedKey && passed === false) {
    const signature = header.slice(header.lastIndexOf(":") + 1);
    throw StorageErrorFactory.getAuthenticationFailed(
      blobContext.contextId,
      `The MAC signature found in the HTTP request '${signature}' is not the same as any computed signature.`,
    );
  }
  return passed;
};

for (const Authenticator of [AccountSASAuthenticator, BlobSASAuthenticator]) {
  const sasValidate = Authenticator.prototype.validate;
  Authenticator.prototype.validate = async function validate(req, context) {
    const blobContext = new BlobStorageContext(context);
    // A user delegation SAS (skoid) is signed with a key from Entra ID, not an account key.
    const keySigned = req.getQuery("sig") !== undefined && req.getQuery("skoid") === undefined;
    if (keySigned && sharedKeyDisabled.has(String(blobContext.account).toLowerCase())) {
      throw keyBasedAuthenticationNotPermitted(blobContext.contextId);
    }
    return sasValidate.call(this, req, context);
  };
}

// Azurite handles one SIGTERM (process.once): it stops listening, finishes requests and saves its
// metadata, then exits. A killed local cloud makes Linux send the parent-death SIGTERM more than
// once (the child is first handed to another thread of the dying process), and a second SIGTERM
// would kill Azurite before it saved. So: a SIGTERM before Azurite's own handler exists exits at
// once (nothing to save yet); one while it shuts down is ignored; the shutdown gets 15 s.
let shuttingDown = false;
process.on("SIGTERM", () => {
  if (process.listenerCount("SIGTERM") > 1) {
    shuttingDown = true; // Azurite's own handler runs right after this one
    setTimeout(() => process.exit(1), 15000).unref();
    return;
  }
  if (!shuttingDown) {
    process.exit(143);
  }
});

require(path.join(blobDir, "main.js"));
