import OrchControl
import OrchCore

/// What the service client (``FaultProfile/services``) asked and was answered.
struct ServiceBook {
    enum Kind: String {
        case create, scale, template, policy, rollback, remove
    }

    struct Request {
        var name: String
        var kind: Kind
        var at: Moment
    }

    /// Requests not answered yet (a manager crash loses them, as `ClientBook.pending`).
    var pending: [RequestID: Request] = [:]
    /// The names the client uses, `svc-1` to `svc-N` (N from 1 to 3).
    var names: [String] = []
    /// Each service as last answered; an answer "not found" forgets it.
    var known: [String: ServiceRecord] = [:]
    /// Counts the templates made, so that each new one is a new version.
    var templates = 0
}

/// The services the client creates and the changes it sends: templates of busybox-like
/// tasks that run until stopped (or, when made to fail, exit 1 before their minimum healthy
/// time), some with a health check or a disconnect policy, with any restart policy (a
/// service's replicas ignore it); short update policies, so that deploys end within seconds.
enum ServiceWorkload {
    /// The environment variable that names a template's service (the engine's sabotage
    /// `replicaStartsFail` tells a replica's container by it).
    static let serviceKey = "SIM_SERVICE"
    static let templateKey = "SIM_TEMPLATE"

    static func spec(name: String, template: Int, using random: inout SimRandom) -> ServiceSpec {
        ServiceSpec(
            name: name, replicas: random.int(1...5), task: self.template(service: name, number: template, failing: false, using: &random),
            update: policy(using: &random))
    }

    /// A task template; `failing`: its tasks exit 1 before any minimum healthy time the
    /// client sets (at least 1 s), so a deploy of it fails.
    static func template(service: String, number: Int, failing: Bool, using random: inout SimRandom) -> TaskSpec {
        let behaviour: Behaviour = failing
            ? (random.chance(0.5) ? .instant(code: 1) : .exit(code: 1, after: .milliseconds(random.int(100...600))))
            : .forever
        let environment = [Behaviour.key: behaviour.text, serviceKey: service, templateKey: String(number)]
        var ports: [PortSpec] = []
        var healthCheck: HealthCheck?
        if random.chance(0.3) {
            // Half of them on the routing mesh (`converged` checks every worker's tables).
            ports.append(random.chance(0.5)
                ? PortSpec(containerPort: 8080, publish: 8000 + random.int(0...9), publishMode: random.chance(0.5) ? .tcp : .http)
                : PortSpec(containerPort: 8080))
            healthCheck = HealthCheck(path: "/healthz", port: 8080, interval: .milliseconds(500), timeout: .milliseconds(200), failureThreshold: 2)
        }
        let policy: RestartPolicy
        switch random.weighted([40, 30, 30]) {
        case 0: policy = .never
        case 1: policy = RestartPolicy(mode: .onFailure, maxRestarts: random.int(0...3))
        default: policy = RestartPolicy(mode: .always, maxRestarts: random.int(0...3))
        }
        return TaskSpec(
            id: nil, name: nil, image: random.pick(Workload.images), command: ["sh", "-c", "simulated \(behaviour.text) template \(number)"],
            environment: environment, ports: ports,
            resources: Resources(millicores: 100 * random.int(1...3), memoryBytes: random.pick([32, 64]) << 20),
            restartPolicy: policy, stopGracePeriod: .seconds(random.pick([1, 2, 3, 5])), healthCheck: healthCheck,
            disconnect: random.chance(0.2) ? DisconnectPolicy(stopAfter: .seconds(random.pick([3, 5]))) : nil)
    }

    /// Parallelism 1–2, either order, a minimum healthy time of 1–3 s, a healthy deadline of
    /// 5–15 s, rollback on failure mostly.
    static func policy(using random: inout SimRandom) -> UpdatePolicy {
        UpdatePolicy(
            parallelism: random.int(1...2), order: random.chance(0.5) ? .startFirst : .stopFirst,
            healthyDeadline: .seconds(random.int(5...15)), minHealthyTime: .seconds(random.int(1...3)), autoRollback: random.chance(0.85))
    }
}

extension Simulation {
    // MARK: - The service client

    /// Picks the client's service names; its first requests create them.
    func beginServices() {
        serviceClient.names = (1...serviceRandom.int(1...3)).map { "svc-\($0)" }
        schedule(.serviceClient, at: now + serviceRandom.duration(.milliseconds(100)...(.seconds(1))))
    }

    /// One service request: a creation while a name is not known (a removed service is
    /// created again later), else a scale, a new template (sometimes made to fail), a new
    /// update policy, a rollback or, now and then, a removal.
    func serviceRequest() -> TraceRecord? {
        guard phase == .faults else { return nil }
        schedule(.serviceClient, at: now + serviceRandom.duration(.milliseconds(200)...(.milliseconds(1_500))))
        guard manager != nil, !leaderPaused else { return simRecord("service client: the manager is down or does not answer") }
        let request = RequestID(rawValue: clients.nextRequest)
        clients.nextRequest += 1
        let unknown = serviceClient.names.filter { serviceClient.known[$0] == nil || serviceClient.known[$0]!.removing }
        let name: String
        if !unknown.isEmpty, counters.serviceCreates < serviceClient.names.count || serviceRandom.chance(0.3) {
            name = serviceRandom.pick(unknown)
        } else {
            name = serviceRandom.pick(serviceClient.names)
        }
        guard let record = serviceClient.known[name], !record.removing else {
            serviceClient.templates += 1
            let spec = ServiceWorkload.spec(name: name, template: serviceClient.templates, using: &serviceRandom)
            return sendService(request, name, .create, .createService(request, spec))
        }
        let choice = serviceRandom.weighted([25, 25, 10, 8, 15, 6])
        switch choice {
        case 0:
            let replicas = serviceRandom.chance(0.1) ? 0 : serviceRandom.int(1...5)
            return sendService(request, name, .scale, .updateService(request, name, ServiceChange(replicas: replicas)))
        case 1, 2:
            let failing = choice == 2
            serviceClient.templates += 1
            if failing { counters.serviceFailingTemplates += 1 }
            let task = ServiceWorkload.template(service: name, number: serviceClient.templates, failing: failing, using: &serviceRandom)
            return sendService(request, name, .template, .updateService(request, name, ServiceChange(task: task)))
        case 3:
            let policy = ServiceWorkload.policy(using: &serviceRandom)
            return sendService(request, name, .policy, .updateService(request, name, ServiceChange(update: policy)))
        case 4:
            return sendService(request, name, .rollback, .rollbackService(request, name))
        default:
            return sendService(request, name, .remove, .removeService(request, name))
        }
    }

    private func sendService(_ request: RequestID, _ name: String, _ kind: ServiceBook.Kind, _ input: ManagerMachine.Input) -> TraceRecord? {
        serviceClient.pending[request] = .init(name: name, kind: kind, at: now)
        switch kind {
        case .create: counters.serviceCreates += 1
        case .scale: counters.serviceScales += 1
        case .template: counters.serviceTemplates += 1
        case .policy: counters.servicePolicies += 1
        case .rollback: counters.serviceRollbacks += 1
        case .remove: counters.serviceRemovals += 1
        }
        return feedManager(input)
    }

    /// The manager answers a service request; the client keeps the service as answered.
    func serviceAnswered(_ request: ServiceBook.Request, _ answer: ManagerMachine.Answer) {
        switch answer {
        case .service(let record, _, _):
            counters.serviceAnswers += 1
            serviceClient.known[record.name] = record
        case .refused(.serviceNotFound):
            serviceClient.known[request.name] = nil
        default:
            break
        }
    }
}
