import OrchControl
import OrchCore

/// One step as the trace shows it: who handled what, and the effects, in short. Kept as
/// values and formatted only when printed (a run formats the last few on a violation).
struct TraceRecord {
    enum Subject {
        case manager(ManagerMachine.Input)
        case worker(Int, WorkerMachine.Input)
        case sim(String)
    }

    enum Effects {
        case none
        case manager([ManagerMachine.Effect])
        case worker([WorkerMachine.Effect])
    }

    var step: Int
    var time: Moment
    var subject: Subject
    var effects: Effects

    func line(_ simulation: Simulation) -> String {
        let head = "\(time) #\(step) "
        switch subject {
        case .sim(let text):
            return head + "sim: " + text
        case .manager(let input):
            return head + "manager <- " + Self.describe(input) + Self.describe(effects)
        case .worker(let index, let input):
            return head + "\(simulation.nodeName(index)) <- " + Self.describe(input) + Self.describe(effects)
        }
    }

    static func describe(_ effects: Effects) -> String {
        let parts: [String]
        switch effects {
        case .none: return ""
        case .manager(let effects): parts = effects.compactMap(describe)
        case .worker(let effects): parts = effects.compactMap(describe)
        }
        return parts.isEmpty ? "" : " => " + parts.joined(separator: "; ")
    }

    // MARK: - Inputs

    static func describe(_ input: ManagerMachine.Input) -> String {
        switch input {
        case .submit(let request, let spec, _):
            "submit \(request) \(spec.id?.short ?? "(no id)") \(spec.restartPolicy.mode.rawValue)\(spec.restartPolicy.maxRestarts.map { "/\($0)" } ?? "") "
                + "\(spec.environment[Behaviour.key] ?? "") grace \(DurationText.format(spec.stopGracePeriod))"
                + (spec.disconnect.map { " stopAfter \(DurationText.format($0.stopAfter))" } ?? "") + (spec.healthCheck == nil ? "" : " health")
        case .stop(let request, let task, _): "stop \(request) \(task.short)"
        case .purge(let request, let task, _): "purge \(request) \(task.short)"
        case .drainNode(let request, let node, let drain, let move): "\(drain ? "drain" : "undrain")Node \(request) \(node)\(move ? " move" : "")"
        case .removeNode(let request, let node): "removeNode \(request) \(node)"
        case .createService(let request, let spec, _): "createService \(request) \(spec.name) x\(spec.replicas) \(describe(spec.update))"
        case .updateService(let request, let name, let change, _):
            "updateService \(request) \(name)\(change.replicas.map { " x\($0)" } ?? "")\(change.task.map { " task \($0.environment[Behaviour.key] ?? "")" } ?? "")"
                + (change.update.map { " policy \(describe($0))" } ?? "")
        case .rollbackService(let request, let name, _): "rollbackService \(request) \(name)"
        case .removeService(let request, let name, _): "removeService \(request) \(name)"
        case .connected(let connection): "connected \(connection)"
        case .authenticated(let connection, let node): "\(connection) certified as \(node?.rawValue ?? "nobody")"
        case .admit(let request, let node, let renewing): "admit \(request) \(node)\(renewing ? " renewing" : "")"
        case .received(let connection, let message): "\(connection) \(describe(message))"
        case .disconnected(let connection): "disconnected \(connection)"
        case .timer: "timer"
        case .committed(let through): "committed through \(through)"
        case .commitFailed(let through, let reason): "commit failed through \(through) (\(reason))"
        }
    }

    /// `order/parallelism`, the minimum healthy time and deadline, and `no-rollback` when it does not roll back.
    static func describe(_ policy: UpdatePolicy) -> String {
        "\(policy.order.rawValue)/\(policy.parallelism) \(DurationText.format(policy.minHealthyTime))/\(DurationText.format(policy.healthyDeadline))"
            + (policy.autoRollback ? "" : " no-rollback")
    }

    static func describe(_ input: WorkerMachine.Input) -> String {
        switch input {
        case .found(let containers):
            "found [" + containers.map { "\($0.container) \($0.task.short)#\($0.attempt) \($0.running ? "running" : "exited \($0.exitCode.map(String.init) ?? "?")")" }.joined(separator: ", ") + "]"
        case .containersGone(let containers): "gone [" + containers.map(\.rawValue).joined(separator: ", ") + "]"
        case .engine(let error): "engine \(error.map { "down (\($0))" } ?? "up")"
        case .connected: "welcome"
        case .disconnected: "disconnected"
        case .received(let message): describe(message)
        case .containerStarted(let task, let attempt, let container, _): "started \(task.short)#\(attempt) as \(container)"
        case .containerFailed(let task, let attempt, let container, let error): "start failed \(task.short)#\(attempt) \(container.map(\.rawValue) ?? "") (\(error))"
        case .containerExited(let task, let attempt, let code): "exited \(task.short)#\(attempt) code \(code)"
        case .healthChanged(let task, let attempt, let health, _): "health \(task.short)#\(attempt) \(health.rawValue)"
        case .stopRequested(let task, let attempt): "local stop \(task.short)#\(attempt)"
        case .timer: "timer"
        }
    }

    // MARK: - Effects

    static func describe(_ effect: ManagerMachine.Effect) -> String? {
        switch effect {
        case .send(let connection, let message): "\(connection) << \(describe(message))"
        case .close(let connection): "close \(connection)"
        case .persist(let batch): "persist #\(batch.sequence) (\(batch.changes.count))"
        case .answer(let request, let answer): "answer \(request) \(describe(answer))"
        case .wake(let moment): "wake \(moment)"
        case .logData, .logEnd, .logsLost: nil
        case .note(let note): describe(note)
        case .catalogChanged(let name, let catalog?): "catalog \(name) #\(catalog.index): \(catalog.ready.count) ready of \(catalog.endpoints.count)"
        case .catalogChanged(let name, nil): "catalog \(name) gone"
        }
    }

    static func describe(_ note: ManagerMachine.Note) -> String? {
        switch note {
        case .nodeDown(let name, let silent): "note: \(name) down (silent \(DurationText.format(silent)))"
        case .nodeLost(let name, let tasks): "note: \(name) lost (\(tasks) tasks)"
        case .nodeRestarting(let name, _): "note: \(name) restarting"
        case .taskEvent(let task, let event): "note: \(task.short) \(event)"
        case .transitionRefused(let text): "note: refused \(text)"
        case .protocolViolation(let connection, let text): "note: protocol \(connection) \(text)"
        case .storeFailing(let reason): "note: store failing (\(reason))"
        case .storeRecovered: "note: store recovered"
        case .nodeRefused(let name, _, let reason): "note: refused \(name) (\(reason))"
        case .nodeEngine(let name, let error): "note: \(name) engine \(error.map { "down (\($0))" } ?? "up")"
        case .nodeJoined, .nodeReplacedConnection, .nodeDisconnected, .nodeDraining, .submitted, .placed, .heartbeat: nil
        }
    }

    static func describe(_ answer: ManagerMachine.Answer) -> String {
        switch answer {
        case .submitted(let record, let created, let revision): "submitted \(record.id.short) created \(created) rev \(revision)"
        case .stopped(let record, let revision): "stopped \(record.id.short) \(record.state.rawValue) rev \(revision)"
        case .purged(let id, let revision): "purged \(id.short) rev \(revision)"
        case .nodeDrained(let revision): "nodeDrained rev \(revision)"
        case .nodeRemoved(let revision): "node removed rev \(revision)"
        case .service(let record, let created, let revision):
            "service \(record.name) v\(record.version) x\(record.replicas)\(record.deploy.map { " deploy \($0.state.rawValue)" } ?? "") created \(created) rev \(revision)"
        case .admitted: "admitted"
        case .refused(let error): "refused (\(error))"
        }
    }

    static func describe(_ effect: WorkerMachine.Effect) -> String? {
        switch effect {
        case .send(let message): "<< \(describe(message))"
        case .sendHeartbeat(let sequence): "<< heartbeat \(sequence)"
        case .start(let task, let attempt, _): "start \(task.short)#\(attempt)"
        case .stop(let task, let attempt, let container, let grace): "stop \(task.short)#\(attempt) \(container) grace \(DurationText.format(grace))"
        case .remove(let container, _): "remove \(container)"
        case .watchHealth(let task, let attempt, _, _, _): "watch health \(task.short)#\(attempt)"
        case .unwatchHealth(let task, let attempt): "unwatch \(task.short)#\(attempt)"
        case .dropConnection(let reason): "drop connection (\(reason))"
        case .wake(let moment): "wake \(moment)"
        case .note(let note):
            switch note {
            case .stoppedForDisconnect(let task, let attempt, let after): "note: stops \(task.short)#\(attempt) after \(DurationText.format(after)) unheard"
            case .ignoredStaleAssignment(let task, let attempt, let current): "note: ignores \(task.short)#\(attempt) (holds #\(current))"
            case .healthPortNotPublished(let task, let port): "note: \(task.short) port \(port) not published"
            case .adopted(let task, let attempt, let state): "note: adopted \(task.short)#\(attempt) \(state.rawValue)"
            case .ignoredStaleEpoch(let kind, let epoch, let newest): "note: ignores \(kind) of epoch \(epoch) (newest \(newest))"
            case .running, .exited, .failedToStart: nil
            }
        }
    }

    static func describe(_ message: WireMessage) -> String {
        switch message {
        case .hello(let hello): "hello \(hello.name)"
        case .welcome: "welcome"
        case .refused(let refused): "refused (\(refused.reason))"
        case .joinRequest(let request): "join_request \(request.nodeID)"
        case .joinResult(let result): "join_result \(result.nodeID)"
        case .heartbeat(let beat): "heartbeat \(beat.sequence)"
        case .assignTask(let assign): "assign \(assign.task.short)#\(assign.attempt)"
        case .stopTask(let stop): "stop_task \(stop.task.short)#\(stop.attempt)"
        case .taskStatus(let status):
            "status #\(status.statusID) \(status.task.short)#\(status.attempt) \(status.state.rawValue)"
                + (status.exitCode.map { " code \($0)" } ?? "") + (status.health == .none ? "" : " \(status.health.rawValue)")
        case .taskList(let list): "task_list [" + list.entries.map { "\($0.task.short)#\($0.attempt) \($0.state.rawValue)" }.joined(separator: ", ") + "]"
        case .submitTask(let submit): "submit_task \(submit.requestID)"
        case .submitResult(let result): "submit_result \(result.requestID)"
        case .ack(let ack): "ack #\(ack.statusID)"
        case .logRequest(let request): "log_request \(request.streamID)"
        case .logChunk(let chunk): "log_chunk \(chunk.streamID)"
        case .logCredit(let credit): "log_credit \(credit.streamID)"
        case .logEnd(let end): "log_end \(end.streamID)"
        case .goodbye(let goodbye): "goodbye \(goodbye.reason)"
        case .serviceTable(let table): "service_table \(table.service) #\(table.index): \(table.endpoints.count) endpoints"
        case .error(let error): "error \(error.code) (\(error.message))"
        }
    }
}
