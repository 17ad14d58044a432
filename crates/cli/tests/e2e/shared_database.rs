//! Nodes of one database share what must be the same on every node: the gateway's host key
//! (agents pin it), the user CA, users and their logins.

use postern_protocol::api::Role;

use crate::cluster::Cluster;

#[tokio::test]
async fn nodes_of_one_database_share_keys_and_logins() {
    let cluster = Cluster::start(2).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(
        a.server().host_key_fingerprint,
        b.server().host_key_fingerprint,
        "every node presents the same host key"
    );
    assert!(
        b.server().initial_admin_password.is_none(),
        "one administrator is made, once"
    );

    // A user added through one node logs in on the other, and a login made on one is honoured
    // by the other.
    let token = a.add_user("ops", Role::Operator).await;
    let (status, body) = b
        .call(reqwest::Method::GET, "/api/v1/agents", Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    b.login("ops", "ops-password-123").await;
}

#[tokio::test]
async fn a_node_alone_keeps_its_keys_in_its_data_dir() {
    let node = crate::harness::TestServer::start().await;
    let dir = node.data_dir();
    assert!(dir.join(postern_server::HOST_KEY_FILE).is_file());
    assert!(dir.join(postern_server::USER_CA_FILE).is_file());
}
