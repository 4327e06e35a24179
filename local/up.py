"""``make up``: the demo's stack in the foreground, to try the hub by hand; Ctrl-C stops it.

Prints the endpoints, the environment file a shell can source to use the Azure SDK against the
local cloud, and a few commands to start with. The demo's secrets are seeded near expiry, so
the cloud's expiry scan starts their rotations within seconds; the one that requires approval
waits for you.
"""

from __future__ import annotations

import shutil
import signal
import threading

from local.scenario import seed_demo_secrets, start_consumer
from local.stack import (
    BLOB_CONSUMER_SITE,
    CONSUMER_SITE,
    MYSQL,
    NOTIFY_TOPIC,
    REPO_ROOT,
    SP_CONSUMER_SITE,
    LocalStack,
)


def main() -> int:
    data = REPO_ROOT / ".data" / "up"
    shutil.rmtree(data, ignore_errors=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with LocalStack(data) as stack:
        assert stack.cloud is not None
        assert stack.host is not None
        seeded = seed_demo_secrets(stack)
        for site in (CONSUMER_SITE, SP_CONSUMER_SITE, BLOB_CONSUMER_SITE):
            start_consumer(stack, site)
        approve = stack.rotation_id(seeded.approved)
        print(
            f"""
Key Vault Rotation Hub, running locally (Ctrl-C stops everything)

  hub (Functions host)   {stack.hub_url}   log: {stack.host.log_path}
  local cloud admin      {stack.cloud.admin_url}
  environment file       {stack.cloud.data_dir / "env"}   (source it to use the Azure SDK here)
  PostgreSQL             127.0.0.1:{stack.pg.port}
  MariaDB (mysql-login)  127.0.0.1:{stack.database(MYSQL).port}
  vaults                 {", ".join(f"https://{v}.vault.azure.net" for v in sorted(stack.info["vaults"]))}
  storage accounts       {", ".join(a["blob_endpoint"] for a in stack.info["storage_accounts"].values())}
  notifications          {stack.topic_endpoint(NOTIFY_TOPIC)}

Try (kvrotate is the operators' command line, .venv/bin/kvrotate):
  export KVROTATE_HUB_URL={stack.hub_url}
  .venv/bin/kvrotate list
  .venv/bin/kvrotate status {approve}
  .venv/bin/kvrotate rotate spoke2-kv batch-db-password --wait
Approve or reject in a browser (signed in as a local principal, as App Service authentication would):
  {stack.hub_url}/.auth/login/local?post_login_redirect_uri=/api/approvals
or with the signed-in session's cookie:
  curl -s -X POST -b '{stack.signed_in()["Cookie"]}' {stack.hub_url}/api/rotations/{approve}/approve
  curl -s {stack.hub_url}/runtime/webhooks/durabletask/instances
  curl -s {stack.cloud.admin_url}/admin/eventgrid/topics/{NOTIFY_TOPIC}/events   (the notifications)
""",
            flush=True,
        )
        stop.wait()
    print("stopped everything")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
