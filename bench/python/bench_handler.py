"""A Python Lambda handler that deletes a user's learnings with boto3.

It is written the way a Python Lambda user would write it: a paginated
keys-only Query and Table.batch_writer, with the client made at import time.
The bench starts it under awslambdaric for the cold-start comparison, and
boto3_delete.py times delete_user_items for the throughput comparison.

The environment must name the endpoint (AWS_ENDPOINT_URL_DYNAMODB), the region
(AWS_REGION) and the table (LEARNINGS_TABLE). A missing variable raises
KeyError at import, so boto3 never falls back to an AWS endpoint.
"""

import os

import boto3
from boto3.dynamodb.conditions import Key

PARTITION_KEY = "user_id"
SORT_KEY = "learning_type"

_dynamodb = boto3.resource(
    "dynamodb",
    endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"],
    region_name=os.environ["AWS_REGION"],
)
TABLE = _dynamodb.Table(os.environ["LEARNINGS_TABLE"])


def delete_user_items(table, user_id):
    """Delete every item in user_id's partition and return the number deleted."""
    query = {
        "KeyConditionExpression": Key(PARTITION_KEY).eq(user_id),
        "ProjectionExpression": "#pk, #sk",
        "ExpressionAttributeNames": {"#pk": PARTITION_KEY, "#sk": SORT_KEY},
        "ConsistentRead": True,
    }
    deleted = 0

    # batch_writer sends a BatchWriteItem call for every 25 keys, resends
    # UnprocessedItems, and flushes the rest when the block ends.
    with table.batch_writer() as batch:
        while True:
            page = table.query(**query)
            for item in page["Items"]:
                batch.delete_item(
                    Key={PARTITION_KEY: item[PARTITION_KEY], SORT_KEY: item[SORT_KEY]}
                )
                deleted += 1

            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    return deleted


def handler(event, context):
    """Delete the learnings of the user in the path and respond 204."""
    user_id = event["pathParameters"]["user_id"]
    delete_user_items(TABLE, user_id)
    return {"statusCode": 204}
