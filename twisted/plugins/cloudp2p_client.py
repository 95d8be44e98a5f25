from twisted.application.service import ServiceMaker

cloudp2pClient = ServiceMaker(
    "cloudp2p client", "cloudp2p.client.tap", "The cloudp2p client daemon (peer listener and local control socket).", "cloudp2p-client"
)
