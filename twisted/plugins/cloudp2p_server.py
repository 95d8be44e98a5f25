from twisted.application.service import ServiceMaker

cloudp2pServer = ServiceMaker(
    "cloudp2p server", "cloudp2p.server.tap", "A cloudp2p cloud server (election, load balancing, failover, directory, encryption).", "cloudp2p-server"
)
