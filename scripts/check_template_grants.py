"""Check that the template's IAM grants name exactly the tables that the function may use.

For each case below, the script evaluates template.yaml with the case's parameter values, the
way CloudFormation would: the parameter constraints, the Rules, the Conditions, the
AWS::LanguageExtensions Fn::ForEach loops and the intrinsic functions. It then compares two
sets:

- the tables that the function's LEARNINGS_TABLE and LEARNINGS_DATABASES variables name;
- the tables on which the function's role may call dynamodb:Query and dynamodb:BatchWriteItem.

They must be equal, and those two actions must be the only DynamoDB grants. Cases of invalid
parameters must be rejected by a constraint or a Rule. cfn-lint cannot make this check, because
it lints the template with made-up parameter values and does not compare two properties.

The evaluator models only the intrinsic functions and resource types that those parts of the
template use, and raises UnsupportedTemplate on anything else, so that a template change that it
cannot follow fails the check instead of passing it. Before the cases, the script breaks the
template in three ways and checks that each break fails a case, so the check itself can fail.

Usage: check_template_grants.py TEMPLATE. cfn-lint's YAML loader reads the short-form tags.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from dataclasses import dataclass, field

from cfnlint.decode import cfn_yaml

ACTIONS = frozenset({"dynamodb:Query", "dynamodb:BatchWriteItem"})

PSEUDO_PARAMETERS = {
    "AWS::Partition": "aws",
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::StackName": "delete-learning-user",
    "AWS::URLSuffix": "amazonaws.com",
}

# Required parameters without a default, set to valid values in every case.
REQUIRED_PARAMETERS = {
    "UserPoolId": "eu-west-1_AbC123xyZ",
    "UserPoolClientId": "4example0client0id",
}

# IAM's rules for an inline policy name.
POLICY_NAME_PATTERN = re.compile(r"[\w+=,.@-]{1,128}")

NO_VALUE = object()


class UnsupportedTemplate(Exception):
    """The template uses something that this evaluator does not model."""


class Rejected(Exception):
    """CloudFormation would reject the parameter values."""


@dataclass
class Case:
    name: str
    parameters: dict[str, str]
    # For a case that must fail, a text that the rejection message contains.
    rejected_by: str | None = None
    expected_tables: list[str] = field(default_factory=list)


CASES = [
    Case("default parameters", {}, expected_tables=["agno_learnings"]),
    Case(
        "database without extra tables",
        {"DatabaseId": "eu"},
        expected_tables=["agno_learnings"],
    ),
    Case(
        "database with one extra table",
        {"DatabaseId": "eu", "ExtraTableNames": "agno_learnings_archive"},
        expected_tables=["agno_learnings", "agno_learnings_archive"],
    ),
    Case(
        "database with three extra tables",
        {
            "TableName": "learnings.eu-1",
            "DatabaseId": "eu-1",
            "ExtraTableNames": "learnings.eu-2,learnings_eu_3,L" + "x" * 99,
        },
        expected_tables=["learnings.eu-1", "learnings.eu-2", "learnings_eu_3", "L" + "x" * 99],
    ),
    Case(
        "extra tables without a database",
        {"ExtraTableNames": "agno_learnings_archive"},
        rejected_by="ExtraTablesNeedDatabaseId",
    ),
    Case(
        "empty name between extra tables",
        {"DatabaseId": "eu", "ExtraTableNames": "agno_a,,agno_b"},
        rejected_by="ExtraTableNamesHaveNoGaps",
    ),
    Case(
        "trailing comma after extra tables",
        {"DatabaseId": "eu", "ExtraTableNames": "agno_a,"},
        rejected_by="ExtraTableNamesHaveNoGaps",
    ),
    Case(
        "space after a comma",
        {"DatabaseId": "eu", "ExtraTableNames": "agno_a, agno_b"},
        rejected_by="ExtraTableNames",
    ),
    Case(
        "extra table name too long",
        {"DatabaseId": "eu", "ExtraTableNames": "x" * 101},
        rejected_by="ExtraTableNames",
    ),
    Case(
        "extra tables that differ only in punctuation",
        {"DatabaseId": "eu", "ExtraTableNames": "agno-a,agno_a"},
        rejected_by="ExtraTablePolicyagnoa twice",
    ),
    Case(
        "quote in the database id",
        {"DatabaseId": 'eu"'},
        rejected_by="DatabaseId",
    ),
]


class Stack:
    """One evaluation of the template under a set of parameter values."""

    def __init__(self, template: dict, overrides: dict[str, str]):
        self.template = template
        self.parameters = resolve_parameters(template.get("Parameters", {}), overrides)
        self.condition_values: dict[str, bool] = {}
        check_rules(self, template.get("Rules", {}))
        self.resources = expand_resources(self, template.get("Resources", {}))

    def condition(self, name: str) -> bool:
        if name not in self.condition_values:
            conditions = self.template.get("Conditions", {})
            if name not in conditions:
                raise UnsupportedTemplate(f"condition {name} is not defined")
            self.condition_values[name] = bool(self.evaluate(conditions[name]))
        return self.condition_values[name]

    def ref(self, name: str):
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in PSEUDO_PARAMETERS:
            return PSEUDO_PARAMETERS[name]
        if name in self.parameters:
            return self.parameters[name]

        resource = self.template.get("Resources", {}).get(name)
        if resource is not None and resource.get("Type") == "AWS::DynamoDB::Table":
            return self.evaluate(resource["Properties"]["TableName"])
        raise UnsupportedTemplate(f"Ref to {name}")

    def get_att(self, name: str, attribute: str):
        resource = self.template.get("Resources", {}).get(name)
        if resource is not None and resource.get("Type") == "AWS::DynamoDB::Table" and attribute == "Arn":
            return table_arn(self.ref(name))
        raise UnsupportedTemplate(f"Fn::GetAtt {name}.{attribute}")

    def evaluate(self, node):
        """Evaluate intrinsic functions in NODE, dropping AWS::NoValue from objects and lists."""
        if isinstance(node, list):
            values = [self.evaluate(item) for item in node]
            return [value for value in values if value is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self.function(key, argument)

        evaluated = {key: self.evaluate(value) for key, value in node.items()}
        return {key: value for key, value in evaluated.items() if value is not NO_VALUE}

    def function(self, name: str, argument):
        if name == "Ref":
            return self.ref(argument)
        if name == "Condition":
            return self.condition(argument)
        if name == "Fn::GetAtt":
            resource, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            return self.get_att(resource, attribute)

        if name == "Fn::If":
            condition, if_true, if_false = argument
            return self.evaluate(if_true if self.condition(condition) else if_false)
        if name == "Fn::Equals":
            left, right = (self.evaluate(value) for value in argument)
            return left == right
        if name == "Fn::Not":
            return not self.evaluate(argument[0])
        if name == "Fn::And":
            return all(self.evaluate(value) for value in argument)
        if name == "Fn::Or":
            return any(self.evaluate(value) for value in argument)

        if name == "Fn::Join":
            delimiter, values = argument
            return delimiter.join(self.evaluate(values))
        if name == "Fn::Sub":
            return self.substitute(argument)

        # The two functions that only Rules use.
        if name == "Fn::EachMemberEquals":
            values, expected = (self.evaluate(value) for value in argument)
            return all(value == expected for value in values)
        if name == "Fn::Contains":
            values, expected = (self.evaluate(value) for value in argument)
            return expected in values
        raise UnsupportedTemplate(name)

    def substitute(self, argument) -> str:
        if isinstance(argument, list):
            text, variables = argument
            variables = {key: self.evaluate(value) for key, value in variables.items()}
        else:
            text, variables = argument, {}

        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return variables[name]
            if "." in name:
                return self.get_att(*name.split(".", 1))
            value = self.ref(name)
            if not isinstance(value, str):
                raise UnsupportedTemplate(f"Fn::Sub of the list {name}")
            return value

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def table_arn(table: str) -> str:
    partition, region, account = (
        PSEUDO_PARAMETERS[name] for name in ("AWS::Partition", "AWS::Region", "AWS::AccountId")
    )
    return f"arn:{partition}:dynamodb:{region}:{account}:table/{table}"


def resolve_parameters(declarations: dict, overrides: dict[str, str]) -> dict:
    """Apply defaults and constraints. A CommaDelimitedList becomes a list, as in CloudFormation."""
    unknown = set(overrides) - set(declarations)
    if unknown:
        raise UnsupportedTemplate(f"the case sets undeclared parameters {sorted(unknown)}")

    values = {}
    for name, declaration in declarations.items():
        raw = overrides.get(name, REQUIRED_PARAMETERS.get(name, declaration.get("Default")))
        if raw is None:
            raise UnsupportedTemplate(f"parameter {name} has no default and no value in the case")
        raw = str(raw)

        kind = declaration["Type"]
        if kind == "CommaDelimitedList":
            items = raw.split(",")
        elif kind in ("String", "Number"):
            items = [raw]
        else:
            raise UnsupportedTemplate(f"parameter type {kind}")

        for item in items:
            check_parameter_constraints(name, declaration, item)
        values[name] = items if kind == "CommaDelimitedList" else raw
    return values


def check_parameter_constraints(name: str, declaration: dict, value: str) -> None:
    pattern = declaration.get("AllowedPattern")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise Rejected(f"parameter {name}: {shorten(value)!r} does not match AllowedPattern {pattern}")

    allowed = declaration.get("AllowedValues")
    if allowed is not None and value not in [str(item) for item in allowed]:
        raise Rejected(f"parameter {name}: {value!r} is not one of AllowedValues")

    if len(value) < int(declaration.get("MinLength", 0)):
        raise Rejected(f"parameter {name}: {value!r} is shorter than MinLength")
    if "MaxLength" in declaration and len(value) > int(declaration["MaxLength"]):
        raise Rejected(f"parameter {name}: {value!r} is longer than MaxLength")


def check_rules(stack: Stack, rules: dict) -> None:
    for name, rule in rules.items():
        if "RuleCondition" in rule and not stack.evaluate(rule["RuleCondition"]):
            continue
        for assertion in rule["Assertions"]:
            if not stack.evaluate(assertion["Assert"]):
                raise Rejected(f"rule {name}: {assertion.get('AssertDescription', '')}")


def expand_resources(stack: Stack, resources: dict) -> dict:
    """Expand Fn::ForEach loops, then drop resources whose Condition is false."""
    expanded = {}
    for key, value in resources.items():
        if key.startswith("Fn::ForEach::"):
            generated = expand_loop(stack, value)
        else:
            generated = {key: value}
        for logical_id, resource in generated.items():
            if logical_id in expanded:
                raise Rejected(f"two resources have the logical id {logical_id}")
            expanded[logical_id] = resource

    return {
        logical_id: resource
        for logical_id, resource in expanded.items()
        if "Condition" not in resource or stack.condition(resource["Condition"])
    }


def expand_loop(stack: Stack, loop: list) -> dict:
    identifier, collection, fragment = loop
    items = stack.evaluate(collection)
    if not isinstance(items, list):
        raise UnsupportedTemplate("an Fn::ForEach collection that is not a list")

    generated = {}
    for item in items:
        # &{Identifier} drops the characters that a logical id cannot contain.
        replacements = {
            "${" + identifier + "}": item,
            "&{" + identifier + "}": re.sub(r"[^A-Za-z0-9]", "", item),
        }
        for key, value in replace_identifier(copy.deepcopy(fragment), replacements).items():
            if key in generated:
                raise Rejected(f"Fn::ForEach generates the logical id {key} twice")
            generated[key] = value
    return generated


def replace_identifier(node, replacements: dict[str, str]):
    if isinstance(node, str):
        for placeholder, value in replacements.items():
            node = node.replace(placeholder, value)
        return node
    if isinstance(node, list):
        return [replace_identifier(item, replacements) for item in node]
    if isinstance(node, dict):
        if any(key.startswith("Fn::ForEach::") for key in node):
            raise UnsupportedTemplate("a nested Fn::ForEach")
        return {
            replace_identifier(key, replacements): replace_identifier(value, replacements)
            for key, value in node.items()
        }
    return node


def function_and_role(stack: Stack) -> tuple[dict, str]:
    functions = [
        (logical_id, resource)
        for logical_id, resource in stack.resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    ]
    if len(functions) != 1:
        raise UnsupportedTemplate(f"{len(functions)} AWS::Serverless::Function resources, expected 1")

    logical_id, function = functions[0]
    if "Role" in function["Properties"]:
        raise UnsupportedTemplate("a function with its own Role")
    # SAM names the role that it creates for a function after the function.
    return function, f"{logical_id}Role"


def configured_tables(environment: dict) -> set[str]:
    """List the tables that LEARNINGS_TABLE and LEARNINGS_DATABASES name."""
    tables = set()
    if "LEARNINGS_TABLE" in environment:
        tables.add(environment["LEARNINGS_TABLE"])

    if "LEARNINGS_DATABASES" in environment:
        databases = json.loads(environment["LEARNINGS_DATABASES"])
        if not isinstance(databases, dict) or not databases:
            raise AssertionError(f"LEARNINGS_DATABASES is not a non-empty object: {databases!r}")
        for db_id, names in databases.items():
            if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
                raise AssertionError(f"database {db_id!r} does not list table names: {names!r}")
            tables.update(names)
    return tables


def role_statements(stack: Stack, function: dict, role: str) -> list[dict]:
    """Collect the policy statements of the function's role, from SAM's Policies and IAM resources."""
    statements = []
    for policy in stack.evaluate(function["Properties"].get("Policies", [])):
        if not isinstance(policy, dict) or "Statement" not in policy:
            raise UnsupportedTemplate(f"a Policies entry that is not a policy document: {policy!r}")
        statements.extend(policy["Statement"])

    for logical_id, resource in stack.resources.items():
        if resource["Type"] not in ("AWS::IAM::Policy", "AWS::IAM::RolePolicy", "AWS::IAM::ManagedPolicy"):
            continue

        properties = resource["Properties"]
        roles = properties.get("Roles", []) + ([properties["RoleName"]] if "RoleName" in properties else [])
        if {"Ref": role} not in roles:
            raise UnsupportedTemplate(f"{logical_id} is attached to {roles!r} and not to {role}")

        name = stack.evaluate(properties.get("PolicyName", logical_id))
        if POLICY_NAME_PATTERN.fullmatch(name) is None:
            raise Rejected(f"{logical_id}: {name!r} is not a valid IAM policy name")
        statements.extend(stack.evaluate(properties["PolicyDocument"])["Statement"])
    return statements


def granted(statements: list[dict]) -> set[tuple[str, str]]:
    grants = set()
    for statement in statements:
        unexpected_keys = set(statement) - {"Sid", "Effect", "Action", "Resource"}
        if unexpected_keys or statement.get("Effect") != "Allow":
            raise UnsupportedTemplate(f"a statement that is not a plain Allow: {statement!r}")
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        grants.update((action, resource) for action in actions for resource in resources)
    return grants


def check_case(template: dict, case: Case) -> str:
    """Return a line that describes the passed case, or raise AssertionError."""
    try:
        stack = Stack(template, case.parameters)
        function, role = function_and_role(stack)
        environment = stack.evaluate(function["Properties"]["Environment"]["Variables"])
        tables = configured_tables(environment)
        grants = granted(role_statements(stack, function, role))
    except Rejected as rejection:
        if case.rejected_by is not None and case.rejected_by in str(rejection):
            return f"rejected: {rejection}"
        raise AssertionError(f"unexpected rejection: {rejection}") from rejection

    if case.rejected_by is not None:
        raise AssertionError(f"accepted, but {case.rejected_by} should reject it")

    expected_grants = {(action, table_arn(table)) for action in ACTIONS for table in tables}
    missing = expected_grants - grants
    extra = grants - expected_grants
    if missing or extra:
        raise AssertionError(f"grants differ from the tables. Missing: {sorted(missing)}. Extra: {sorted(extra)}")
    if tables != set(case.expected_tables):
        raise AssertionError(f"configured tables {sorted(tables)}, expected {sorted(case.expected_tables)}")
    return f"{len(ACTIONS)} actions on exactly {', '.join(shorten(table) for table in sorted(tables))}"


def shorten(text: str) -> str:
    return text if len(text) <= 40 else f"{text[:20]}... ({len(text)} characters)"


def failed_cases(template: dict) -> list[str]:
    failures = []
    for case in CASES:
        try:
            check_case(template, case)
        except (AssertionError, UnsupportedTemplate) as error:
            failures.append(f"{case.name}: {error}")
    return failures


def broken_templates(template: dict):
    """Yield a description and a copy of TEMPLATE with one grant broken, which some case must catch."""
    without_loop = copy.deepcopy(template)
    del without_loop["Resources"]["Fn::ForEach::ExtraTablePolicies"]
    yield "no policy for the extra tables", without_loop

    extra_action = copy.deepcopy(template)
    function = extra_action["Resources"]["DeleteLearningUserFunction"]
    function["Properties"]["Policies"][0]["Statement"][0]["Action"].append("dynamodb:DeleteTable")
    yield "one more action on the stack's table", extra_action

    wildcard = copy.deepcopy(template)
    loop = wildcard["Resources"]["Fn::ForEach::ExtraTablePolicies"]
    (policy,) = loop[2].values()
    policy["Properties"]["PolicyDocument"]["Statement"][0]["Resource"] = {
        "Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"
    }
    yield "a wildcard in place of the extra tables", wildcard


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: check_template_grants.py TEMPLATE", file=sys.stderr)
        return 2
    template = cfn_yaml.load(sys.argv[1])

    for description, broken in broken_templates(template):
        if not failed_cases(broken):
            print(f"FAIL: the check passes a template with {description}", file=sys.stderr)
            return 1
        print(f"ok   the check catches {description}")

    failures = 0
    for case in CASES:
        try:
            print(f"ok   {case.name}: {check_case(template, case)}")
        except (AssertionError, UnsupportedTemplate) as error:
            print(f"FAIL {case.name}: {error}", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
