"""Member management (admin): members and roles, invitations, the audit trail; and the
user's own sessions (any role)."""

from __future__ import annotations

from aiohttp import web
from psycopg.types.json import Jsonb

from app.apidoc import NO_CONTENT, Doc, json_body, ok
from app.http import (
    Limit,
    Route,
    path_id,
    query_limit,
    read_json_object,
    read_json_patch,
    respond_sql,
)


async def list_members(request: web.Request) -> web.Response:
    """The organisation's members."""
    return await respond_sql(request, "api.member_list()")


async def update_member(request: web.Request) -> web.Response:
    """Change a member's role."""
    user_id = path_id(request, "user_id")
    body = await read_json_patch(request)
    return await respond_sql(request, "api.member_update(%s, %s)", [user_id, Jsonb(body)])


async def remove_member(request: web.Request) -> web.Response:
    """End a membership and the user's sessions in the organisation."""
    return await respond_sql(request, "api.member_remove(%s)", [path_id(request, "user_id")])


async def list_invitations(request: web.Request) -> web.Response:
    """The organisation's open invitations."""
    return await respond_sql(request, "api.invitation_list()")


async def create_invitation(request: web.Request) -> web.Response:
    """Invite an e-mail with a role."""
    body = await read_json_object(request)
    return await respond_sql(request, "api.invitation_create(%s)", [Jsonb(body)])


async def delete_invitation(request: web.Request) -> web.Response:
    """Withdraw an open invitation."""
    return await respond_sql(
        request, "api.invitation_delete(%s)", [path_id(request, "invitation_id")]
    )


async def list_audit_events(request: web.Request) -> web.Response:
    """The organisation's audit events, newest first."""
    return await respond_sql(
        request,
        "api.audit_event_list(%s, %s)",
        [query_limit(request), request.query.get("cursor")],
    )


async def get_join_policy(request: web.Request) -> web.Response:
    """Who may join the organisation by signing in with Google."""
    return await respond_sql(request, "api.join_policy_json()")


async def update_join_policy(request: web.Request) -> web.Response:
    """Change the join policy or the role of people joining by domain."""
    body = await read_json_patch(request)
    return await respond_sql(request, "api.join_policy_update(%s)", [Jsonb(body)])


async def list_my_sessions(request: web.Request) -> web.Response:
    """The user's live sessions."""
    return await respond_sql(request, "api.my_session_list()")


async def revoke_my_session(request: web.Request) -> web.Response:
    """Sign out one of the user's sessions."""
    return await respond_sql(request, "api.my_session_revoke(%s)", [path_id(request, "session_id")])


ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/members",
        list_members,
        "admin",
        sql="api.member_list",
        doc=Doc(
            operation_id="listMembers",
            tag="members",
            summary="List members",
            description="The organisation's members and roles, by e-mail.",
            response=ok("Members.", "MemberList", {"items": []}),
        ),
    ),
    Route(
        "PATCH",
        "/members/{user_id}",
        update_member,
        "admin",
        sql="api.member_update",
        doc=Doc(
            operation_id="updateMember",
            tag="members",
            summary="Change a member's role",
            description="409 last_admin when it would leave the organisation without an admin.",
            response=ok("The member.", "Member"),
            body=json_body("MemberUpdate", {"role": "viewer"}),
            errors=(409,),
        ),
    ),
    Route(
        "DELETE",
        "/members/{user_id}",
        remove_member,
        "admin",
        status=204,
        sql="api.member_remove",
        doc=Doc(
            operation_id="removeMember",
            tag="members",
            summary="Remove a member",
            description=(
                "Ends the membership and revokes the user's sessions in this organisation at "
                "once. 409 last_admin for the last admin."
            ),
            response=NO_CONTENT,
            errors=(409,),
        ),
    ),
    Route(
        "GET",
        "/invitations",
        list_invitations,
        "admin",
        sql="api.invitation_list",
        doc=Doc(
            operation_id="listInvitations",
            tag="members",
            summary="List open invitations",
            response=ok("Invitations.", "InvitationList", {"items": []}),
        ),
    ),
    Route(
        "POST",
        "/invitations",
        create_invitation,
        "admin",
        status=201,
        sql="api.invitation_create",
        doc=Doc(
            operation_id="createInvitation",
            tag="members",
            summary="Invite someone",
            description=(
                "The person joins with `role` (default agent) by signing in with Google as that "
                "verified e-mail within 14 days. Inviting again replaces the open invitation. "
                "409 already_a_member."
            ),
            response=ok("Created.", "Invitation"),
            body=json_body("InvitationCreate", {"email": "bob@example.com", "role": "agent"}),
            errors=(409,),
        ),
    ),
    Route(
        "DELETE",
        "/invitations/{invitation_id}",
        delete_invitation,
        "admin",
        status=204,
        sql="api.invitation_delete",
        doc=Doc(
            operation_id="deleteInvitation",
            tag="members",
            summary="Withdraw an invitation",
            response=NO_CONTENT,
        ),
    ),
    Route(
        "GET",
        "/audit-events",
        list_audit_events,
        "admin",
        sql="api.audit_event_list",
        limit=Limit("audit_page"),
        doc=Doc(
            operation_id="listAuditEvents",
            tag="members",
            summary="The audit trail",
            description="Newest first, in keyset pages (400 invalid_cursor).",
            response=ok("A page.", "AuditEventPage", {"items": [], "next_cursor": None}),
            query=(
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    "description": "`next_cursor` of the previous page.",
                },
            ),
        ),
    ),
    Route(
        "GET",
        "/organization/join-policy",
        get_join_policy,
        "admin",
        sql="api.join_policy_json",
        doc=Doc(
            operation_id="getJoinPolicy",
            tag="members",
            summary="Who may join",
            description=(
                "invite_only: invited e-mails only; domain: a Google account of one of the "
                "verified Workspace `domains` (the ID token's hd claim, never the e-mail's "
                "domain alone) joins with `domain_join_role`. Domains are verified by an "
                "operator (`ticketing org-create --domain`)."
            ),
            response=ok("The policy.", "JoinPolicy"),
        ),
    ),
    Route(
        "PATCH",
        "/organization/join-policy",
        update_join_policy,
        "admin",
        sql="api.join_policy_update",
        doc=Doc(
            operation_id="updateJoinPolicy",
            tag="members",
            summary="Change who may join",
            description="409 no_verified_domain for `domain` without a verified domain.",
            response=ok("The policy.", "JoinPolicy"),
            body=json_body("JoinPolicyUpdate", {"join_policy": "domain"}),
            errors=(409,),
        ),
    ),
    Route(
        "GET",
        "/me/sessions",
        list_my_sessions,
        "viewer",
        sql="api.my_session_list",
        doc=Doc(
            operation_id="listMySessions",
            tag="auth",
            summary="My sessions",
            description="The user's live sessions in every organisation; `current` marks this one.",
            response=ok("Sessions.", "MySessionList", {"items": []}),
        ),
    ),
    Route(
        "DELETE",
        "/me/sessions/{session_id}",
        revoke_my_session,
        "viewer",
        status=204,
        sql="api.my_session_revoke",
        doc=Doc(
            operation_id="revokeMySession",
            tag="auth",
            summary="Sign out a session",
            description="Revokes one of the user's sessions (elsewhere, or this one).",
            response=NO_CONTENT,
        ),
    ),
)
