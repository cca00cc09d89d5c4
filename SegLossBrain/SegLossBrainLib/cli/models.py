"""``seglossbrain models list|activate|revert|delete``: the versions in the user model store."""
from __future__ import annotations

from .common import add_progress_json, format_dice


def run_models(args, reporter) -> int:
    from ..models import store as model_store

    action = args.models_command
    if action == "list":
        versions = [v.summary() for v in model_store.list_versions()]
        if reporter.json_lines:
            reporter.emit("result", models=versions)
        elif not versions:
            print("no models installed")
        for v in versions if not reporter.json_lines else []:
            extra = (f", base {v['base']}, Dice {format_dice(v['dice_before'])} -> {format_dice(v['dice_after'])}"
                     if v["base"] else "")
            print(f"{'*' if v['active'] else ' '} {v['name']:32s} {v['source']:7s} loss {v['loss']}, "
                  f"{v['steps']} steps{extra}")
        return 0
    if action == "activate":
        version = model_store.activate(args.name, force=args.force)
        message = f"{version.name} ({version.source}) is now the active model"
    elif action == "revert":
        removed = model_store.revert()
        message = "reverted to the shipped default model" if removed else "already using the shipped default model"
    else:
        path = model_store.delete(args.name)
        message = f"deleted {args.name} ({path})"
    if reporter.json_lines:
        reporter.emit("result", action=action, message=message)
    else:
        print(message)
    return 0


def add_models_command(commands) -> None:
    manage = commands.add_parser("models", help="list, activate, revert or delete model versions")
    add_progress_json(manage, "results")
    actions = manage.add_subparsers(dest="models_command", required=True)
    listing = actions.add_parser("list", help="shipped and user versions; * marks the active one")
    activate = actions.add_parser("activate", help="use this version when no model is named")
    activate.add_argument("name", help="the version's name, as 'models list' shows it")
    activate.add_argument("--force", action="store_true",
                          help="activate even a version that scored worse than its base on its own validation case")
    revert = actions.add_parser("revert", help="use the shipped default model again")
    delete = actions.add_parser("delete", help="delete a user version (not shipped ones, not the active one)")
    delete.add_argument("name", help="the user version's name, as 'models list' shows it")
    for action in (listing, activate, revert, delete):  # `models list --progress-json` works as well
        add_progress_json(action, "results")
    manage.set_defaults(handler=run_models)
