"""Enforced copies, the client's part: the owner hands the cloud its half of the key, the viewer
asks for it on each view (issue 17).

Owner: ``grant`` splits the content key (``container.grant_enforced``: the copy holds share A),
seals share B for the viewer's registered X25519 key and stores it in the cloud with the view
limit (``share_put``) *before* the copy leaves; ``set_limit`` changes that limit at once
(``set-views``, ``more-views``; 0 = ``revoke``, which destroys the share).

Viewer: ``view`` checks the copy locally first (signed rights, counter, ledger: the second check;
a local "no views left" asks nothing), then asks the cloud for the share (``share_view``, routed,
journaled, counted exactly once), opens it with the viewer's key, decodes once with it and drops
it: the share is never written anywhere. A refusal (no views left, revoked) shows the cover.

Modes are the words ``enforced`` and ``offline`` (the default, offline-capable: the copy holds the
whole key and the client counts views).
"""

from __future__ import annotations

from typing import Any

import attrs

from cloudp2p.client import errors as cerr
from cloudp2p.client.identity import b64, unb64
from cloudp2p.errors import RequestFailed

ENFORCED = "enforced"
OFFLINE = "offline"
REFUSALS = ("no_views_left", "share_revoked")  # the cloud says no: show the cover


def mode_of(enforced: bool) -> str:
    return ENFORCED if enforced else OFFLINE


class EnforcedCopies:
    """What enforced mode adds to the sharing and viewing stories (``parts``: the daemon's ``Parts``)."""

    def __init__(self, parts: Any) -> None:
        self.p = parts

    def wanted(self, args: dict[str, Any]) -> bool:
        """The mode of a new grant: ``--enforced`` / ``--offline``, else the client's setting."""
        enforced, offline = args.get("enforced", False), args.get("offline", False)
        if not isinstance(enforced, bool) or not isinstance(offline, bool):
            raise cerr.InvalidArgument("(enforced and offline must be true or false)")
        if enforced and offline:
            raise cerr.InvalidArgument("(a copy is either enforced or offline-capable, not both)")
        return enforced or (not offline and bool(self.p.session.config.enforced_default))

    async def grant(
        self, png: bytes, content_key: bytes, *, image_id: str, info: dict[str, Any], views: int, version: int
    ) -> bytes:
        """The viewer's enforced copy; share B is in the cloud (sealed for the viewer) when this returns."""
        from cloudp2p.encryption import container, keywrap

        assert self.p.session.identity is not None
        viewer_pub = self.p.peers.owner_public(info, "x25519")
        copy, share_b = await self.p.work.run_blocking(
            container.grant_enforced,
            png,
            content_key,
            owner_ed25519=self.p.session.identity.ed25519_private,
            owner_id=self.p.session.user_id,
            viewer_id=info["user_id"],
            viewer_x25519_pub=viewer_pub,
            views=views,
            version=version,
        )
        sealed = keywrap.seal_share(share_b, viewer_pub, image_id)
        del share_b
        await self.p.cloud.call(
            "share_put",
            self.p.session.require_token(),
            image_id,
            info["user_id"],
            b64(sealed),
            views,
            version,
        )
        return copy

    async def set_limit(self, image_id: str, viewer_id: str, views: int, version: int) -> dict[str, Any]:
        """The cloud's limit for this viewer, changed now (0 revokes and destroys the share)."""
        try:
            return await self.p.cloud.call(
                "share_limit", self.p.session.require_token(), image_id, viewer_id, views, version
            )
        except RequestFailed as e:
            if e.code == "share_revoked":
                raise cerr.ClientError(
                    "(that copy was revoked and its key destroyed; share the image again to give views)"
                ) from None
            raise

    async def view(self, data: bytes, viewer: Any, image_id: str, owner_id: str) -> Any:
        """One view of an enforced copy: a ``container.ViewResult`` (the cover when the cloud refuses).

        The PNG is decoded once (``*_carrier`` calls): the local check and the decode share it.
        """
        from cloudp2p.encryption import container, keywrap

        carrier = await self.p.work.run_blocking(container.load_carrier, data)
        status = await self.p.work.run_blocking(container.status_carrier, carrier, viewer)
        if status.views_left <= 0:  # the second check says no: do not spend a view in the cloud
            return container.ViewResult(image=None, cover_png=data, png=data, status=status, consumed=False)
        try:
            reply = await self.p.cloud.call("share_view", self.p.session.require_token(), image_id, owner_id)
        except RequestFailed as e:
            if e.code not in REFUSALS:
                raise
            status = attrs.evolve(status, views_left=0)
            return container.ViewResult(image=None, cover_png=data, png=data, status=status, consumed=False)
        assert self.p.session.identity is not None
        try:
            sealed = unb64(reply.get("share", ""))
        except ValueError:
            raise cerr.AccessDenied("(the cloud's key share is not base64)") from None
        share = keywrap.open_share(sealed, self.p.session.identity.x25519_private, image_id)
        image, status, changed = await self.p.work.run_blocking(
            container.view_carrier, carrier, viewer, share
        )
        del share  # used for this one decode, never stored
        png = await self.p.work.run_blocking(container.save_carrier, carrier) if changed else data
        cloud_left = int(reply.get("views_left", 0))
        if cloud_left < status.views_left:  # the cloud's count wins: it survives restored files
            status = attrs.evolve(status, views_left=cloud_left)
        return container.ViewResult(
            image=image, cover_png=png, png=png, status=status, consumed=image is not None
        )
