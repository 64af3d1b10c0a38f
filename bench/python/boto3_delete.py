"""Time boto3's deletion of one user's items and print the result as JSON.

The output is one line: {"deleted": <items>, "seconds": <query and delete time>}.
BENCH_USER_ID names the user. The other variables are those of bench_handler.
"""

import json
import os
import time

# Importing the handler module builds the client, so the timer below leaves
# it out, as a warm Lambda would.
import bench_handler


def main():
    user_id = os.environ["BENCH_USER_ID"]

    started = time.perf_counter()
    deleted = bench_handler.delete_user_items(bench_handler.TABLE, user_id)
    seconds = time.perf_counter() - started

    print(json.dumps({"deleted": deleted, "seconds": seconds}))


if __name__ == "__main__":
    main()
