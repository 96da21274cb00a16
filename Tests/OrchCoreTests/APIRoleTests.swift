import OrchCore
import Testing

/// The one rule that says which role a request needs, over the paths people and tools send.
@Suite struct APIRoleTests {
    @Test(arguments: [
        ("GET", "/healthz", nil),
        ("HEAD", "/healthz", nil),
        ("POST", "/healthz", APIRole.operator),
        ("GET", "/healthz/x", .viewer),
        ("GET", "/tasks", .viewer),
        ("HEAD", "/tasks", .viewer),
        ("GET", "/tasks/abc/logs", .viewer),
        ("GET", "/metrics", .viewer),
        ("GET", "/nodes", .viewer),
        ("POST", "/tasks", .operator),
        ("DELETE", "/tasks/abc", .operator),
        ("PUT", "/tasks", .operator),
        ("PATCH", "/anything", .operator),
        ("DELETE", "/nodes/n1", .admin),
        ("PATCH", "/nodes/n1", .admin),
        ("GET", "/tokens", .admin),
        ("HEAD", "/tokens", .admin),
        ("DELETE", "/tokens/ci", .admin),
        ("POST", "/join-token/rotate", .admin),
        ("GET", "/join-token", .admin),
        ("GET", "/tasks?state=running", .viewer),
        ("GET", "/tokens?x=1", .admin),
        ("GET", "/ui/login", nil),
        ("POST", "/ui/login", nil),
        ("GET", "/ui/console.css", nil),
        ("POST", "/ui/console.css", .operator),
        ("POST", "/ui/tasks/abc/stop", .operator),
        ("POST", "/ui/tasks/abc/rm", .operator),
        ("GET", "/ui/tasks", .viewer),
        ("GET", "/ui", .viewer),
        ("POST", "/ui/logout", .viewer),
        ("GET", "/ui/login/x", .viewer),
    ] as [(String, String, APIRole?)])
    func theRoleARequestNeeds(method: String, path: String, role: APIRole?) {
        #expect(APIRole.required(method: method, path: path) == role, "\(method) \(path)")
    }

    @Test func rolesAreOrdered() {
        #expect(APIRole.viewer < .operator && APIRole.operator < .admin)
        #expect(APIRole.allCases.sorted() == [.viewer, .operator, .admin])
    }
}
