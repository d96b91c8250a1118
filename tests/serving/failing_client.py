"""A stand-in load client that fails as a client does when the server drops its connections."""

import sys

print("Starting main benchmark run...")
print("aiohttp.client_exceptions.ServerDisconnectedError: Server disconnected", file=sys.stderr)
sys.exit(2)
