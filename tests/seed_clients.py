"""The seed's Python client functions, verbatim (../shared/seeds/002_*.txt, "Use Cases").

Only what the seed leaves undefined is added above them: the imports, `API_KEY`, and
`restart_cluster_basic`, written as the seed's "Basic cluster restart" curl example.
Tests point these clients at the local API by routing `https://api.tensorone.ai` to it.
"""
# ruff: noqa
# mypy: ignore-errors

from datetime import datetime

import requests

API_KEY = "set-by-the-test"


def restart_cluster_basic(cluster_id, restart_reason):
    """The seed's first curl example as Python."""
    return requests.post(
        f"https://api.tensorone.ai/v1/clusters/{cluster_id}/restart",
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        json={"wait_for_ready": True, "timeout_minutes": 20, "restart_reason": restart_reason},
    ).json()


# ---------------------------------------------------------------- verbatim from the seed

def apply_system_updates(cluster_ids, maintenance_window):
    """Apply system updates during maintenance window"""
    
    results = []
    
    for cluster_id in cluster_ids:
        # Get current cluster configuration
        cluster_info = requests.get(
            f"https://api.tensorone.ai/v1/clusters/{cluster_id}",
            headers={"Authorization": f"Bearer {API_KEY}"}
        ).json()
        
        if not cluster_info["success"]:
            results.append({"cluster_id": cluster_id, "success": False, "error": "Failed to get cluster info"})
            continue
        
        cluster = cluster_info["data"]
        
        # Determine restart strategy based on cluster type
        restart_config = {
            "wait_for_ready": True,
            "timeout_minutes": 20,
            "apply_system_updates": True,
            "restart_reason": f"Maintenance window: {maintenance_window['id']}"
        }
        
        # Production clusters get more graceful treatment
        if "prod" in cluster["name"].lower():
            restart_config["grace_period_minutes"] = 15
            restart_config["preserve_state"] = True
        else:
            restart_config["grace_period_minutes"] = 5
        
        # Apply any pending Docker image updates
        if maintenance_window.get("docker_updates", {}).get(cluster_id):
            restart_config["update_docker_image"] = maintenance_window["docker_updates"][cluster_id]
        
        try:
            result = restart_cluster_basic(cluster_id, restart_config["restart_reason"])
            
            results.append({
                "cluster_id": cluster_id,
                "name": cluster["name"],
                "success": result["success"],
                "downtime_seconds": result.get("data", {}).get("downtime_seconds"),
                "updates_applied": result.get("data", {}).get("configuration_changes", [])
            })
            
        except Exception as e:
            results.append({
                "cluster_id": cluster_id,
                "success": False,
                "error": str(e)
            })
    
    return {
        "maintenance_window": maintenance_window["id"],
        "total_clusters": len(cluster_ids),
        "successful_updates": len([r for r in results if r["success"]]),
        "results": results
    }


def recover_cluster_from_error(cluster_id, recovery_strategy="restart"):
    """Recover cluster from error state using specified strategy"""
    
    # Get current cluster state
    cluster_info = requests.get(
        f"https://api.tensorone.ai/v1/clusters/{cluster_id}",
        headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    
    if not cluster_info["success"]:
        return {"success": False, "error": "Failed to get cluster info"}
    
    cluster = cluster_info["data"]
    
    if cluster["status"] != "error":
        return {"success": False, "error": f"Cluster is not in error state (current: {cluster['status']})"}
    
    recovery_actions = []
    
    if recovery_strategy == "restart":
        # Simple restart with force
        restart_config = {
            "force": True,
            "wait_for_ready": True,
            "apply_system_updates": True,
            "restart_reason": "Error recovery - forced restart"
        }
        
        result = requests.post(
            f"https://api.tensorone.ai/v1/clusters/{cluster_id}/restart",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=restart_config
        ).json()
        
        recovery_actions.append("Forced restart")
        
    elif recovery_strategy == "restore_snapshot":
        # Find latest snapshot and restore
        snapshots = cluster.get("storage", {}).get("snapshots", [])
        
        if not snapshots:
            return {"success": False, "error": "No snapshots available for restore"}
        
        latest_snapshot = max(snapshots, key=lambda s: s["created_at"])
        
        restart_config = {
            "force": True,
            "wait_for_ready": True,
            "restore_from_snapshot": latest_snapshot["id"],
            "restart_reason": f"Error recovery - restore from snapshot {latest_snapshot['id']}"
        }
        
        result = requests.post(
            f"https://api.tensorone.ai/v1/clusters/{cluster_id}/restart",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=restart_config
        ).json()
        
        recovery_actions.append(f"Restored from snapshot: {latest_snapshot['name']}")
        
    elif recovery_strategy == "rebuild":
        # Restart with fresh image and reset configuration
        original_template = cluster.get("template_info", {})
        
        restart_config = {
            "force": True,
            "wait_for_ready": True,
            "update_docker_image": original_template.get("docker_image"),
            "environment_updates": {
                "RECOVERY_MODE": "true",
                "RECOVERY_TIMESTAMP": datetime.now().isoformat()
            },
            "restart_reason": "Error recovery - rebuild from template"
        }
        
        result = requests.post(
            f"https://api.tensorone.ai/v1/clusters/{cluster_id}/restart",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json=restart_config
        ).json()
        
        recovery_actions.append("Rebuilt from original template")
    
    if result["success"]:
        return {
            "success": True,
            "cluster_id": cluster_id,
            "recovery_strategy": recovery_strategy,
            "recovery_actions": recovery_actions,
            "restart_duration": result.get("data", {}).get("restart_duration_seconds"),
            "new_status": result.get("data", {}).get("status"),
            "recovery_completed_at": result.get("data", {}).get("restart_completed_at")
        }
    
    return result
